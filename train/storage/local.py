"""The file:// backend: a store on a local (or mounted) filesystem."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

from train.storage.core import CHUNK, Store, StoreError, _check_name, _validate_manifest


# --- file:// ---------------------------------------------------------------------------------------
class FileStore(Store):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(os.path.expanduser(root)))
        self.uri = "file://" + self.root.as_posix()

    def _obj(self, sha: str) -> Path:
        return self.root / "objects" / sha[:2] / sha

    def _object_size(self, sha: str) -> int | None:
        try:
            return self._obj(sha).stat().st_size
        except FileNotFoundError:
            return None

    def _atomic_write(self, final: Path, fill: Callable[[object], None]) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{random.getrandbits(32):08x}"
            try:
                with open(tmp, "wb") as out:
                    fill(out)
                    out.flush()
                    os.fsync(out.fileno())  # the object is on disk before the manifest that names it
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StoreError(f"disk full while writing {final}") from None
            raise StoreError(f"cannot write {final}: {e.strerror or e}") from None

    def _put_object(self, sha: str, src: Path, size: int, cb: Callable[[int], None]) -> None:
        def fill(out) -> None:
            h = hashlib.sha256()  # hashed while copied: an object never lands under a wrong name
            with open(src, "rb") as f:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := f.readinto(buf):
                    out.write(view[:n])
                    h.update(view[:n])
                    cb(n)
            if h.hexdigest() != sha:
                raise StoreError(f"{src} changed while it was being uploaded: upload it again")

        self._atomic_write(self._obj(sha), fill)

    def _read_object(self, sha: str, offset: int, out, cb: Callable[[int], None]) -> None:
        try:
            f = open(self._obj(sha), "rb")
        except FileNotFoundError:
            raise StoreError(f"object {self.object_uri(sha)} is missing from the store") from None
        with f:
            f.seek(offset)
            while block := f.read(CHUNK):
                out.write(block)
                cb(len(block))

    def _manifest_path(self, name: str) -> Path:
        return self.root / "manifests" / f"{name}.json"

    def _put_manifest_bytes(self, name: str, data: bytes) -> None:
        self._atomic_write(self._manifest_path(name), lambda out: out.write(data))

    def _get_manifest_bytes(self, name: str) -> bytes | None:
        try:
            return self._manifest_path(name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _list_manifest_names(self, prefix: str) -> list[str]:
        base = self.root / "manifests"
        if not base.is_dir():
            return []
        names = []
        for p in base.rglob("*.json"):
            if p.name.startswith(".tmp-"):
                continue
            name = p.relative_to(base).as_posix()[: -len(".json")]
            if name.startswith(prefix):
                names.append(name)
        return names

    # --- taking in another file:// store's manifest --------------------------------------------------
    def adopt(self, manifest: dict, objects: Path) -> list[str]:
        """MANIFEST from another file:// store (one rsynced from a rented machine), its objects taken from
        OBJECTS/<sha[:2]>/<sha>. Each object is hashed while it is copied in and must match its name
        (the sha256 the machine computed), else it is dropped; the manifest is written only when all
        its objects are here (objects before the manifest that names them). Returns the shas that were
        missing or wrong (then the manifest is not written: the next pull tries again)."""
        name = _check_name(str(manifest.get("name", "")))
        m = _validate_manifest(manifest, name)
        missing = []
        for ent in m["files"].values():
            sha, size = ent["sha256"], ent["size"]
            if self._object_size(sha) == size:
                continue
            src = Path(objects) / sha[:2] / sha
            if not src.is_file():
                missing.append(sha)
                continue
            try:
                self._put_object(sha, src, size, lambda _n: None)  # raises when the bytes are not SHA's
            except StoreError:
                missing.append(sha)
            src.unlink(missing_ok=True)  # taken in, or wrong: fetched again next time
        if not missing:
            self._put_manifest_bytes(name, json.dumps(m, indent=1, sort_keys=True).encode())
        return missing
