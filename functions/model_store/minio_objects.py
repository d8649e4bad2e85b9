"""Model files on MinIO (or any S3-compatible server) through the ``minio`` SDK.

The endpoint comes from ``WXA_S3_ENDPOINT`` (``https://`` by default; ``http://`` for a plain
server), keys from ``WXA_S3_ACCESS_KEY``/``WXA_S3_SECRET_KEY`` or the AWS variables, and a
private CA from ``WXA_S3_CA_BUNDLE``. Resumable uploads need the SDK's multipart calls, which
it keeps protected (``_create_multipart_upload`` and friends); the SDK is pinned for that.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from functions.common.errors import ModelStoreError
from functions.model_store.multipart import FinishedPart, upload_file
from functions.model_store.objects import NO_PROGRESS, Progress, copy_stream

MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}


def minio_client(settings):
    import urllib3
    from minio import Minio

    if not settings.s3_endpoint:
        raise ModelStoreError("minio:// needs the server's address in WXA_S3_ENDPOINT (e.g. https://minio.internal:9000)")
    endpoint = urlparse(settings.s3_endpoint if "//" in settings.s3_endpoint else f"https://{settings.s3_endpoint}")
    access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else os.environ.get("AWS_ACCESS_KEY_ID")
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        raise ModelStoreError("minio:// needs keys: WXA_S3_ACCESS_KEY and WXA_S3_SECRET_KEY (or the AWS_* variables)")
    http_client = None
    if settings.s3_ca_bundle:
        http_client = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(settings.s3_ca_bundle),
                                          retries=urllib3.Retry(total=5, backoff_factor=0.2,
                                                                status_forcelist=[500, 502, 503, 504]))
    return Minio(endpoint.netloc, access_key=access, secret_key=secret, secure=endpoint.scheme == "https",
                 region=settings.s3_region, http_client=http_client)


@contextlib.contextmanager
def minio_errors(location: str, action: str) -> Iterator[None]:
    from minio.error import MinioException, S3Error
    from urllib3.exceptions import HTTPError

    try:
        yield
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise ModelStoreError(f"{action}: the bucket of {location} does not exist (the Pulumi stack creates it)") from None
        if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ModelStoreError(f"{action}: {location} refused the credentials ({exc.code})") from None
        raise ModelStoreError(f"{action}: {location} answered {exc.code}") from None
    except (HTTPError, MinioException) as exc:
        raise ModelStoreError(f"{action}: cannot reach {location} ({type(exc).__name__})") from None


class MinioObjectStore:
    def __init__(self, client, bucket: str, prefix: str = "", *, part_bytes: int = 64 << 20, endpoint: str = ""):
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._part_bytes = part_bytes
        self.location = f"minio://{bucket}/{self._prefix}" + (f" at {endpoint}" if endpoint else "")

    @classmethod
    def from_settings(cls, bucket: str, prefix: str, settings) -> MinioObjectStore:
        return cls(minio_client(settings), bucket, prefix, part_bytes=settings.model_part_mb << 20,
                   endpoint=settings.s3_endpoint)

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        with minio_errors(self.location, f"looking up {key}"):
            try:
                self._client.stat_object(self._bucket, self._key(key))
                return True
            except S3Error as exc:
                if exc.code in MISSING_CODES:
                    return False
                raise

    def put_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> int:
        with minio_errors(self.location, f"uploading {path.name}"):
            return upload_file(_MinioParts(self._client, self._bucket), self._key(key), path, self._part_bytes,
                               progress)

    def get_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> None:
        with minio_errors(self.location, f"downloading {key}"):
            response = self._client.get_object(self._bucket, self._key(key))
            try:
                copy_stream(response, path, progress)
            finally:
                response.close()
                response.release_conn()

    def read_bytes(self, key: str) -> bytes:
        with minio_errors(self.location, f"reading {key}"):
            response = self._client.get_object(self._bucket, self._key(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def create_bytes(self, key: str, data: bytes) -> None:
        from minio.error import S3Error

        with minio_errors(self.location, f"writing {key}"):
            try:
                self._client._put_object(self._bucket, self._key(key), data, headers={"If-None-Match": "*"})
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise ModelStoreError(f"{key} already exists in {self.location}") from None
                raise

    def keys(self, prefix: str) -> Iterator[str]:
        strip = len(self._key(""))
        with minio_errors(self.location, "listing"):
            for item in self._client.list_objects(self._bucket, prefix=self._key(prefix), recursive=True):
                yield item.object_name[strip:]

    def delete(self, key: str) -> None:
        with minio_errors(self.location, f"deleting {key}"):
            self._client.remove_object(self._bucket, self._key(key))


class _MinioParts:
    def __init__(self, client, bucket: str):
        self._client = client
        self._bucket = bucket

    def unfinished_upload(self, key: str) -> str | None:
        uploads = self._client._list_multipart_uploads(self._bucket, prefix=key).uploads
        mine = [u for u in uploads if u.object_name == key]
        mine.sort(key=lambda u: u.initiated_time.timestamp() if u.initiated_time else 0.0)
        return mine[-1].upload_id if mine else None

    def start_upload(self, key: str) -> str:
        return self._client._create_multipart_upload(self._bucket, key, {})

    def finished_parts(self, key: str, upload_id: str) -> list[FinishedPart]:
        parts, marker = [], None
        while True:
            page = self._client._list_parts(self._bucket, key, upload_id, part_number_marker=marker)
            parts += [FinishedPart(p.part_number, p.size, p.etag) for p in page.parts]
            if not page.is_truncated:
                return parts
            marker = page.next_part_number_marker

    def send_part(self, key: str, upload_id: str, number: int, data: bytes, content_md5: str) -> str:
        return self._client._upload_part(self._bucket, key, data, {"Content-MD5": content_md5}, upload_id, number)

    def finish_upload(self, key: str, upload_id: str, parts: list[FinishedPart]) -> None:
        from minio.datatypes import Part

        self._client._complete_multipart_upload(self._bucket, key, upload_id, [Part(p.number, p.etag) for p in parts])

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._client._abort_multipart_upload(self._bucket, key, upload_id)

    def put_small(self, key: str, data: bytes, content_md5: str) -> None:
        self._client._put_object(self._bucket, key, data, headers={"Content-MD5": content_md5})
