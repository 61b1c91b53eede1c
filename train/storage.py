"""Content-addressed artifact store: file://PATH or s3://bucket/prefix.

Runs in two places from one file: inside the training entrypoint on a rented
GPU machine (mirroring outputs/checkpoints) and in the controller on the laptop
(amigo_burst/store.py wraps it with progress bars). So: standard library only,
boto3 imported lazily and only for s3://, and nothing printed except by the CLI.

Layout (the same on disk and in a bucket):

    <root>/objects/<sha[:2]>/<sha256>    blobs, named by their content
    <root>/manifests/<name>.json         {"name", "files": {relpath: {"sha256", "size"}}, "created"}

Objects are written before the manifest that names them, and the manifest in
one atomic step (temp + rename on disk, a single PUT in a bucket): a reader sees
either the old manifest or a complete new one. Because a key is its content's
hash, re-sending an object is harmless and an unchanged re-upload sends 0 bytes.

Downloads go to DEST/.partial/<sha>, are verified against the manifest's sha256
and only then renamed into place; an interrupted download resumes from the
partial's size (an HTTP Range request for s3, a seek for file://).

    python -m train.storage put DIR MANIFEST     # AMIGO_STORE_URI, AMIGO_STORE_ENDPOINT from env
    python -m train.storage get MANIFEST DEST
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

# Never uploaded, whatever the caller's `exclude` says (matched against every path component).
ALWAYS_EXCLUDE = (".env", ".env.*", "*.pem", "*credentials*", ".git", "__pycache__")
PARTIAL_DIR = ".partial"
CHUNK = 4 << 20  # 4 MiB read/write buffer: 50 MB -> 13 syscalls per pass
MIB = 1 << 20
# s3: boto3 splits objects over 8 MiB into 8 MiB parts, 4 in flight: a 1 GiB adapter = 128 parts.
MULTIPART_BYTES = 8 * MIB
MAX_CONCURRENCY = 4
# Our own retry loop around each object (on top of botocore's 10 adaptive attempts):
# backoff 0.5, 1, 2, 4 ... capped at 30 s, giving up after AMIGO_STORE_RETRY_S seconds (default 15 min).
RETRY_S_DEFAULT = 900.0
BACKOFF_CAP_S = 30.0

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


# --- s3:// -----------------------------------------------------------------------------------------
class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, endpoint: str | None = None,
                 credentials: Mapping[str, str] | None = None):
        self.bucket, self.prefix, self.endpoint = bucket, prefix.strip("/"), endpoint
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._credentials = dict(credentials or {})
        self._client = None
        self._bucket_ok = False
        self.retry_s = float(os.environ.get("AMIGO_STORE_RETRY_S", RETRY_S_DEFAULT))

    # client and key helpers
    def _key(self, *parts: str) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    def _obj_key(self, sha: str) -> str:
        return self._key("objects", sha[:2], sha)

    def client(self):
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise StoreError("s3:// store needs boto3: pip install boto3") from None
            cfg = Config(
                retries={"max_attempts": 10, "mode": "adaptive"}, connect_timeout=5, read_timeout=30,
                # R2/B2/MinIO: path-style URLs, and no default CRC32 checksums (boto3 >= 1.36) they may reject
                **({"s3": {"addressing_style": "path"}, "request_checksum_calculation": "when_required",
                    "response_checksum_validation": "when_required"} if self.endpoint else {}),
            )
            c = self._credentials
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
                or ("us-east-1" if self.endpoint else None)
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, region_name=region, config=cfg,
                aws_access_key_id=c.get("AWS_ACCESS_KEY_ID") or None,
                aws_secret_access_key=c.get("AWS_SECRET_ACCESS_KEY") or None,
                aws_session_token=c.get("AWS_SESSION_TOKEN") or None,
            )
        return self._client

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES,
                              max_concurrency=MAX_CONCURRENCY)

    # error handling
    def _code(self, e: BaseException) -> str | None:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            return str(e.response.get("Error", {}).get("Code", "")) or None
        ctx = e.__context__ or e.__cause__  # boto3's S3UploadFailedError wraps the ClientError
        return self._code(ctx) if ctx is not None and ctx is not e else None

    def _retryable(self, e: BaseException) -> bool:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        if isinstance(e, (NoCredentialsError, ParamValidationError)):
            return False
        if isinstance(e, (ClientError, S3UploadFailedError)):
            code = self._code(e)
            if isinstance(e, ClientError):
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
                return status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout", "InternalError")
            if code is None:  # S3UploadFailedError from a connection problem
                return True
            return code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500")
        return isinstance(e, BotoCoreError)  # connection refused/reset, timeouts, truncated bodies

    def _fail(self, e: BaseException, what: str) -> StoreError:
        from botocore.exceptions import NoCredentialsError

        code = self._code(e)
        if code in ("NoSuchBucket",):
            return StoreError(f"bucket {self.bucket} does not exist (store {self.uri})")
        if isinstance(e, NoCredentialsError) or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreError(f"{what} failed: no valid credentials for {self.uri} "
                              "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in .env)")
        if code in ("AccessDenied", "403", "Forbidden"):
            return StoreError(f"{what} failed: access denied by {self.uri}")
        return StoreError(f"{what} failed: {e}")

    def _retry(self, what: str, fn: Callable[[int], object], after_retry: Callable[[], None] | None = None):
        """Run fn(attempt) until it succeeds, a permanent error, or retry_s seconds have passed."""
        deadline = time.monotonic() + self.retry_s
        attempt = 0
        while True:
            try:
                if not self._bucket_ok:
                    self._check_bucket()
                result = fn(attempt)
                if attempt and after_retry is not None:
                    after_retry()
                return result
            except StoreError:
                raise
            except Exception as e:
                from botocore.exceptions import BotoCoreError

                if isinstance(e, OSError) and not isinstance(e, BotoCoreError):
                    raise  # local disk trouble (ENOSPC...): the caller names the file
                if not self._retryable(e) or time.monotonic() >= deadline:
                    raise self._fail(e, what) from None
            delay = min(BACKOFF_CAP_S, 0.5 * 2**attempt) * (0.5 + random.random() / 2)
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            attempt += 1

    def _check_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client().head_bucket(Bucket=self.bucket)
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or self._code(e) in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(f"bucket {self.bucket} does not exist (store {self.uri})") from None
            if status == 301:
                raise StoreError(f"bucket {self.bucket} is in another region: set AWS_REGION to it") from None
            if status == 403:  # some providers deny HeadBucket to object-scoped keys: find out later
                self._bucket_ok = True
                return
            raise
        self._bucket_ok = True

    def _after_failed_upload(self, sha: str) -> None:
        """Abort multipart uploads of this object a failed attempt left behind (billed until aborted).

        Only this key: the object is complete now, so any upload of it still open is a leftover."""
        c, key = self.client(), self._obj_key(sha)
        try:
            for up in c.list_multipart_uploads(Bucket=self.bucket, Prefix=key).get("Uploads", []):
                if up["Key"] == key:
                    c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=up["UploadId"])
        except Exception:  # best effort: a bucket lifecycle rule is the backstop
            pass

    # primitives
    def _head_size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client().head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise

    def _object_size(self, sha: str) -> int | None:
        return self._retry(f"lookup of {self.object_uri(sha)}", lambda _a: self._head_size(self._obj_key(sha)))

    def _put_object(self, sha: str, src: Path, size: int, cb: Callable[[int], None]) -> None:
        self.client().upload_file(str(src), self.bucket, self._obj_key(sha), Config=self._transfer_config(),
                                  Callback=cb)

    def _read_object(self, sha: str, offset: int, out, cb: Callable[[int], None]) -> None:
        from botocore.exceptions import ClientError

        kw = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = self.client().get_object(Bucket=self.bucket, Key=self._obj_key(sha), **kw)
        except ClientError as e:
            if self._code(e) in ("NoSuchKey", "404"):
                raise StoreError(f"object {self.object_uri(sha)} is missing from the store") from None
            raise
        for block in resp["Body"].iter_chunks(MIB):
            out.write(block)
            cb(len(block))

    def _put_manifest_bytes(self, name: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=self._key("manifests", f"{name}.json"), Body=data,
                                 ContentType="application/json")

    def _get_manifest_bytes(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        def get(_a: int) -> bytes | None:
            try:
                resp = self.client().get_object(Bucket=self.bucket, Key=self._key("manifests", f"{name}.json"))
            except ClientError as e:
                if self._code(e) in ("NoSuchKey", "404"):
                    return None
                raise
            return resp["Body"].read()

        return self._retry(f"read of {self.manifest_uri(name)}", get)

    def _list_manifest_names(self, prefix: str) -> list[str]:
        base = self._key("manifests") + "/"

        def ls(_a: int) -> list[str]:
            names = []
            for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                                 Prefix=base + prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(".json"):
                        names.append(obj["Key"][len(base): -len(".json")])
            return names

        return self._retry(f"listing of {self.uri}/manifests/{prefix}", ls)

    def list_object_keys(self) -> list[str]:
        """Every object key under <prefix>/objects/ (tests and garbage collection)."""
        def ls(_a: int) -> list[str]:
            pages = self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key("objects") + "/")
            return [o["Key"] for page in pages for o in page.get("Contents", [])]

        return self._retry(f"listing of {self.uri}/objects", ls)


def open_store(uri: str, endpoint: str | None = None, *, credentials: Mapping[str, str] | None = None) -> Store:
    """file://PATH (relative to the cwd allowed) or s3://bucket/prefix (endpoint: R2/B2/MinIO URL).

    credentials: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN values (the
    controller passes .env's); otherwise boto3's usual chain (env vars, ~/.aws) applies.
    """
    if uri.startswith("file://"):
        path = uri[len("file://"):]
        if not path:
            raise StoreError(f"no path in store URI {uri!r}")
        return FileStore(path)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise StoreError(f"no bucket in store URI {uri!r}")
        return S3Store(bucket, prefix, endpoint or None, credentials)
    raise StoreError(f"unknown store scheme in {uri!r}: use file://PATH or s3://bucket/prefix")


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
