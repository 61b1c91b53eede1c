"""The file:// backend: a store on a local (or mounted) filesystem."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

from train.storage.core import CHUNK, Store, StoreError


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
