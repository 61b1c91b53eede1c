"""The Store base: manifests, put_dir/get_dir over the backend primitives, Transfer, StoreError,
hashing and exclusion (see train/storage/__init__.py for the layout)."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

# Never uploaded, whatever the caller's `exclude` says (matched against every path component).
# Never synced to a machine nor put in the store: secrets (.env, keys, credential files) and caches.
# The controller's workdir bundle uses the same list (amigo_burst/lifecycle/launch.py).
ALWAYS_EXCLUDE = (".env", ".env.*", "*.pem", "*credentials*", ".git", "__pycache__", "*.pyc")
PARTIAL_DIR = ".partial"
CHUNK = 4 << 20  # 4 MiB read/write buffer: 50 MB -> 13 syscalls per pass

Progress = Callable[[int, int], None]  # (bytes_done_delta, total_bytes)


class StoreError(Exception):
    """A store operation that cannot succeed: one line, naming the object/manifest/file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class Transfer:
    files: int  # files in the manifest
    bytes_sent: int  # bytes that crossed the wire (put: uploaded, get: downloaded)
    bytes_skipped: int  # bytes already there (objects in the store / files or partials at dest)
    seconds: float
    transferred: int = 0  # objects actually sent/received

    @property
    def bytes_received(self) -> int:
        return self.bytes_sent


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):  # 3.11+: hashes straight from the file, no Python loop
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()  # pragma: no cover (3.10)
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
        return h.hexdigest()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(name: str) -> str:
    """Manifest names look like relative posix paths: runs/<run-id>/outputs."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"bad manifest name {name!r}: use a relative path like runs/RUN/outputs")
    return name


def _safe_rel(rel: str, manifest: str) -> str:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or "\\" in rel or any(x in ("..", ".", "") for x in rel.split("/")) \
            or p.parts[0] == PARTIAL_DIR:
        raise StoreError(f"manifest {manifest}: unsafe file path {rel!r}")
    return rel


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    parts = rel.split("/")
    for pat in patterns:
        if fnmatch.fnmatchcase(rel, pat) or any(fnmatch.fnmatchcase(p, pat) for p in parts):
            return True
    return False


def _walk(local_dir: Path, patterns: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(posix relpath, path) of every file under local_dir not excluded, sorted, symlinks followed."""
    for here, dirs, files in os.walk(local_dir, followlinks=True):
        rel_here = os.path.relpath(here, local_dir)
        rel_here = "" if rel_here == "." else rel_here.replace(os.sep, "/") + "/"
        dirs[:] = sorted(d for d in dirs if not _excluded(rel_here + d, patterns))
        for f in sorted(files):
            rel = rel_here + f
            if not _excluded(rel, patterns) and os.path.isfile(os.path.join(here, f)):
                yield rel, Path(here, f)


def _validate_manifest(m: object, name: str) -> dict:
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise StoreError(f"manifest {name} is malformed: no 'files' table")
    for rel, ent in m["files"].items():
        _safe_rel(rel, name)
        sha = ent.get("sha256") if isinstance(ent, dict) else None
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)) \
                or not isinstance(ent.get("size"), int) or ent["size"] < 0:
            raise StoreError(f"manifest {name} is malformed: bad entry for {rel!r}")
    return m


class _Meter:
    """Feeds `progress`; counts each byte once even when a retry re-sends it."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        if progress:
            progress(0, total)

    def object(self) -> Callable[[int], None]:
        """A per-object callback: `cb(n)` for n new bytes, `cb(-1)` to mark a retry from scratch."""
        state = {"sent": 0, "reported": 0}

        def cb(n: int) -> None:
            if n < 0:
                state["sent"] = 0
                return
            state["sent"] += n
            new = state["sent"] - state["reported"]
            if new > 0:
                state["reported"] += new
                self.done += new
                if self.progress:
                    self.progress(new, self.total)

        return cb


class Store:
    """Shared put/get logic; the backends implement the _primitives."""

    uri: str

    # --- backend primitives ---------------------------------------------------------------------
    def _object_size(self, sha: str) -> int | None: ...
    def _put_object(self, sha: str, src: Path, size: int, cb: Callable[[int], None]) -> None: ...
    def _read_object(self, sha: str, offset: int, out, cb: Callable[[int], None]) -> None: ...
    def _put_manifest_bytes(self, name: str, data: bytes) -> None: ...
    def _get_manifest_bytes(self, name: str) -> bytes | None: ...
    def _list_manifest_names(self, prefix: str) -> list[str]: ...
    def _retry(self, what: str, fn: Callable[[int], object], after_retry: Callable[[], None] | None = None):
        return fn(0)

    def _after_failed_upload(self, sha: str) -> None:
        """Called once an upload succeeded after a failed attempt (s3: abort leftover multipart uploads)."""

    # --- public API -----------------------------------------------------------------------------
    def object_uri(self, sha: str) -> str:
        return f"{self.uri}/objects/{sha[:2]}/{sha}"

    def manifest_uri(self, name: str) -> str:
        return f"{self.uri}/manifests/{_check_name(name)}.json"

    def has_object(self, sha: str) -> bool:
        return self._object_size(sha) is not None

    def read_manifest(self, name: str) -> dict | None:
        data = self._get_manifest_bytes(_check_name(name))
        if data is None:
            return None
        try:
            m = json.loads(data)
        except ValueError:
            raise StoreError(f"manifest {self.manifest_uri(name)} is not valid JSON") from None
        return _validate_manifest(m, name)

    def list_manifests(self, prefix: str = "") -> list[str]:
        return sorted(self._list_manifest_names(prefix))

    def put_file(self, local: str | os.PathLike, name: str, progress: Progress | None = None) -> Transfer:
        """A one-file manifest {basename: ...}."""
        src = Path(local)
        if not src.is_file():
            raise StoreError(f"not a file: {src}")
        return self._put([(src.name, src)], name, progress)

    def put_dir(self, local_dir: str | os.PathLike, name: str, exclude: Iterable[str] = (),
                progress: Progress | None = None) -> Transfer:
        root = Path(local_dir)
        if not root.is_dir():
            raise StoreError(f"not a directory: {root}")
        patterns = tuple(ALWAYS_EXCLUDE) + tuple(exclude)
        return self._put(list(_walk(root, patterns)), name, progress)

    def _put(self, files: list[tuple[str, Path]], name: str, progress: Progress | None) -> Transfer:
        _check_name(name)
        t0 = time.monotonic()
        entries: dict[str, dict] = {}
        todo: list[tuple[str, Path, os.stat_result]] = []
        skipped = 0
        seen: set[str] = set()
        for rel, path in files:
            st = os.stat(path)
            sha = sha256_file(path)
            entries[rel] = {"sha256": sha, "size": st.st_size}
            if sha in seen:  # same content twice in one directory: one object
                skipped += st.st_size
                continue
            seen.add(sha)
            if self._object_size(sha) == st.st_size:
                skipped += st.st_size
            else:
                todo.append((sha, path, st))
        meter = _Meter(progress, sum(st.st_size for _, _, st in todo))
        sent = 0
        for sha, path, st in todo:
            cb = meter.object()
            self._retry(f"upload of {path} to {self.object_uri(sha)}",
                        lambda attempt, sha=sha, path=path, st=st, cb=cb: (
                            attempt and cb(-1), self._put_object(sha, path, st.st_size, cb)),
                        after_retry=lambda sha=sha: self._after_failed_upload(sha))
            after = os.stat(path)
            if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                raise StoreError(f"{path} changed while it was being uploaded: upload it again")
            sent += st.st_size
        manifest = {"name": name, "files": entries, "created": _now_iso()}
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self._retry(f"write of {self.manifest_uri(name)}", lambda _a: self._put_manifest_bytes(name, data))
        return Transfer(len(entries), sent, skipped, time.monotonic() - t0, len(todo))

    def get_dir(self, name: str, dest: str | os.PathLike, progress: Progress | None = None) -> Transfer:
        t0 = time.monotonic()
        m = self.read_manifest(name)
        if m is None:
            raise StoreError(f"no manifest {name!r} in {self.uri}")
        dest_dir = Path(dest)
        partial_dir = dest_dir / PARTIAL_DIR
        todo: list[tuple[str, str, int, Path]] = []
        skipped = need = 0
        for rel, ent in sorted(m["files"].items()):
            sha, size = ent["sha256"], ent["size"]
            target = dest_dir / rel
            if target.is_file() and target.stat().st_size == size and sha256_file(target) == sha:
                skipped += size
                continue
            part = partial_dir / sha
            have = part.stat().st_size if part.is_file() else 0
            if have > size:
                part.unlink()
                have = 0
            skipped += have
            need += size - have
            todo.append((rel, sha, size, target))
        meter = _Meter(progress, need)
        received = 0
        placed: dict[str, Path] = {}  # sha -> a file of this get already verified (duplicates copy it)
        for rel, sha, size, target in todo:
            part = partial_dir / sha
            try:
                part.parent.mkdir(parents=True, exist_ok=True)
                received += self._fetch(name, rel, sha, size, part, placed.get(sha), meter)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
            except OSError as e:
                part.unlink(missing_ok=True)
                if e.errno == errno.ENOSPC:
                    raise StoreError(f"disk full while writing {target}") from None
                raise StoreError(f"cannot write {target}: {e.strerror or e}") from None
            placed[sha] = target
        try:
            partial_dir.rmdir()
        except OSError:
            pass
        return Transfer(len(m["files"]), received, skipped, time.monotonic() - t0, len(todo))

    def _fetch(self, name: str, rel: str, sha: str, size: int, part: Path, local_copy: Path | None,
               meter: _Meter) -> int:
        """Fill `part` to `size` bytes and verify it; returns bytes that crossed the wire."""
        if local_copy is not None and local_copy.is_file():
            import shutil

            shutil.copyfile(local_copy, part)
            if sha256_file(part) == sha:
                return 0
            part.unlink()
        got = 0
        for fresh in (False, True):
            start = part.stat().st_size if part.is_file() else 0
            cb = meter.object()
            with open(part, "ab") as out:
                def attempt(_n: int, out=out, cb=cb) -> None:
                    out.flush()
                    offset = os.fstat(out.fileno()).st_size  # resume where the last attempt stopped
                    if offset < size:
                        self._read_object(sha, offset, out, cb)
                self._retry(f"download of {self.object_uri(sha)}", attempt)
                out.flush()
                os.fsync(out.fileno())
            got += part.stat().st_size - start
            if sha256_file(part) == sha:
                return got
            part.unlink()
            if start == 0 or fresh:  # the object itself is bad (not a stale partial): refuse
                raise StoreError(f"sha256 mismatch: object {self.object_uri(sha)} does not match "
                                 f"manifest {name} (file {rel}); destination left untouched")
        raise AssertionError("unreachable")  # pragma: no cover
