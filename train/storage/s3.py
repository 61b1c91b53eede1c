"""The s3:// backend (AWS, R2, B2, MinIO): boto3 imported lazily, only when a store is used."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from train.storage.core import Store, StoreError

MIB = 1 << 20
# s3: boto3 splits objects over 8 MiB into 8 MiB parts, 4 in flight: a 1 GiB adapter = 128 parts.
MULTIPART_BYTES = 8 * MIB
MAX_CONCURRENCY = 4
# Our own retry loop around each object (on top of botocore's 10 adaptive attempts):
# backoff 0.5, 1, 2, 4 ... capped at 30 s, giving up after AMIGO_STORE_RETRY_S seconds (default 15 min).
RETRY_S_DEFAULT = 900.0
BACKOFF_CAP_S = 30.0


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
