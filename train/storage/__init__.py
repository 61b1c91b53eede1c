"""Content-addressed artifact store: file://PATH or s3://bucket/prefix.

Runs in two places from one package: inside the training entrypoint on a rented
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

Modules: core (Store: manifests, put/get, Transfer, StoreError, hashing, exclusion),
local (file://), s3 (s3://, boto3 imported lazily), names (manifest names), __main__ (the CLI).
The package's API is the names below.
"""

from __future__ import annotations

from collections.abc import Mapping

from train.storage.core import (
    ALWAYS_EXCLUDE,
    CHUNK,
    PARTIAL_DIR,
    Progress,
    Store,
    StoreError,
    Transfer,
    sha256_file,
)
from train.storage.local import FileStore
from train.storage.s3 import BACKOFF_CAP_S, MAX_CONCURRENCY, MIB, MULTIPART_BYTES, RETRY_S_DEFAULT, S3Store

__all__ = [
    "ALWAYS_EXCLUDE", "BACKOFF_CAP_S", "CHUNK", "MAX_CONCURRENCY", "MIB", "MULTIPART_BYTES", "PARTIAL_DIR",
    "RETRY_S_DEFAULT", "FileStore", "Progress", "S3Store", "Store", "StoreError", "Transfer", "open_store",
    "sha256_file",
]


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
