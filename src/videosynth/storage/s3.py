"""S3-compatible storage (AWS S3, MinIO, SeaweedFS, ...): results as objects, links as SigV4 presigned GETs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from videosynth.errors import InvalidImageSize, StorageUnavailable
from videosynth.storage.base import ObjectExists

try:
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("S3 storage needs the s3 extra: pip install 'videosynth[s3]'") from exc

# Multipart above 16 MB (a 1080P 15 s animatic is ~3 MB; GPU engines' outputs can be far larger).
MULTIPART_THRESHOLD = 16 * 1024 * 1024
# SigV4 presigned URLs cannot live longer than 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600


log = logging.getLogger(__name__)


def _unavailable(action: str, key: str, exc: Exception) -> StorageUnavailable:
    # The key and the server's answer help the operator, not the client: they go to the log only.
    log.warning("S3: could not %s %s: %s", action, key, exc)
    return StorageUnavailable()


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Storage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region or "us-east-1",
            # Path-style works with every S3-compatible server; virtual-host style needs DNS per bucket.
            config=Config(
                signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 3}
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path, content_type: str, *, overwrite: bool = True) -> None:
        if not overwrite:
            # A conditional PUT: S3 itself lets exactly one of concurrent creators win (If-None-Match).
            try:
                with path.open("rb") as body:
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=self._key(key),
                        Body=body,
                        ContentType=content_type,
                        IfNoneMatch="*",
                    )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status in (409, 412):
                    raise ObjectExists(key) from exc
                raise _unavailable("store", key, exc) from exc
            except BotoCoreError as exc:
                raise _unavailable("store", key, exc) from exc
            return
        try:
            self._client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            )
        # upload_file wraps the server's error answers (ClientError) in S3UploadFailedError.
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise _unavailable("store", key, exc) from exc

    def url_for(self, key: str, expires_at_s: int) -> str:
        import time

        expires_in = max(1, min(MAX_PRESIGN_S, int(expires_at_s - time.time())))
        try:
            url: str = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("sign a link for", key, exc) from exc
        return url

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise _unavailable("look up", key, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("look up", key, exc) from exc

    def read_bytes(self, key: str, max_bytes: int) -> bytes | None:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise _unavailable("read", key, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable("read", key, exc) from exc
        body = obj["Body"]
        try:
            if obj.get("ContentLength", 0) > max_bytes:
                raise InvalidImageSize(
                    f"Invalid file size. The image file size must be less than {max_bytes // (1024 * 1024)}MB."
                )
            return bytes(body.read(max_bytes + 1)[: max_bytes + 1])
        finally:
            body.close()

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("delete", key, exc) from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (relative to our prefix); used by operators' checks and the tests."""
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("list", prefix, exc) from exc
        return sorted(keys)
