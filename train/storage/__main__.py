"""The CLI: python -m train.storage put DIR MANIFEST / get MANIFEST DEST
(AMIGO_STORE_URI, AMIGO_STORE_ENDPOINT from env)."""

from __future__ import annotations

import os
import sys

from train.storage import StoreError, open_store


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m train.storage",
                                 description="Content-addressed artifact store (AMIGO_STORE_URI, AMIGO_STORE_ENDPOINT).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get", help="download manifest MANIFEST into DEST (verified, resumable)")
    g.add_argument("manifest")
    g.add_argument("dest")
    p = sub.add_parser("put", help="upload directory DIR as manifest MANIFEST")
    p.add_argument("dir")
    p.add_argument("manifest")
    p.add_argument("--exclude", action="append", default=[], help="glob pattern (repeatable)")
    args = ap.parse_args(argv)
    uri = os.environ.get("AMIGO_STORE_URI", "")
    try:
        if not uri:
            raise StoreError("AMIGO_STORE_URI is not set (file://PATH or s3://bucket/prefix)")
        store = open_store(uri, os.environ.get("AMIGO_STORE_ENDPOINT") or None)
        if args.cmd == "get":
            t = store.get_dir(args.manifest, args.dest)
            verb = f"got {args.manifest} -> {args.dest}"
        else:
            t = store.put_dir(args.dir, args.manifest, exclude=args.exclude)
            verb = f"put {args.dir} -> {args.manifest}"
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (a rerun resumes)", file=sys.stderr)
        return 130
    print(f"{verb}: {t.files} files, {_human(t.bytes_sent)} moved, {_human(t.bytes_skipped)} already there, "
          f"{t.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
