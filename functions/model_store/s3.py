"""Model files in S3 through boto3: AWS itself (the standard credential chain, IRSA included)
or any S3-compatible server at ``WXA_S3_ENDPOINT``.

boto3 ≥ 1.36 adds CRC checksums to every upload and validates them on download by default;
several S3-compatible servers reject or mangle those. Checksums are sent and checked only when
an operation requires them, which AWS and MinIO-compatible servers both accept. Integrity
comes from Content-MD5 on every part and the manifest's SHA-256 on every pull instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from functions.common.errors import ModelStoreError
from functions.model_store.multipart import FinishedPart, upload_file
from functions.model_store.objects import NO_PROGRESS, Progress

CHECKSUM_WHEN_REQUIRED = {"request_checksum_calculation": "when_required",
                          "response_checksum_validation": "when_required"}
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def s3_client(*, endpoint: str | None, region: str | None, access_key: str | None = None,
              secret_key: str | None = None, ca_bundle: Path | None = None):
    import boto3
    from botocore.config import Config

    config = Config(
        **CHECKSUM_WHEN_REQUIRED,
        # Custom endpoints are addressed by path: MinIO-style servers rarely have per-bucket DNS.
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    session = boto3.session.Session()  # the standard chain: AWS_* variables, profiles, IRSA, instance roles
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config,
                          aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                          verify=str(ca_bundle) if ca_bundle else None)


@contextlib.contextmanager
def s3_errors(location: str, action: str) -> Iterator[None]:
    """botocore's errors as ``ModelStoreError`` with what to do about them; never credentials."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            raise ModelStoreError(f"{action}: the bucket of {location} does not exist (the Pulumi stack creates it)") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise ModelStoreError(f"{action}: {location} refused the credentials ({code})") from None
        raise ModelStoreError(f"{action}: {location} answered {code or exc}") from None
    except NoCredentialsError:
        raise ModelStoreError(f"{action}: no S3 credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, "
                              "or a pod role)") from None
    except EndpointConnectionError:
        raise ModelStoreError(f"{action}: cannot reach {location}") from None
    except BotoCoreError as exc:
        raise ModelStoreError(f"{action}: {location}: {type(exc).__name__}") from None


class S3ObjectStore:
    def __init__(self, client, bucket: str, prefix: str = "", *, part_bytes: int = 64 << 20, endpoint: str | None = None):
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._part_bytes = part_bytes
        self.location = f"s3://{bucket}/{self._prefix}" + (f" at {endpoint}" if endpoint else "")

    @classmethod
    def from_settings(cls, bucket: str, prefix: str, settings) -> S3ObjectStore:
        client = s3_client(endpoint=settings.s3_endpoint, region=settings.s3_region, ca_bundle=settings.s3_ca_bundle)
        return cls(client, bucket, prefix, part_bytes=settings.model_part_mb << 20, endpoint=settings.s3_endpoint)

    def _key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with s3_errors(self.location, f"looking up {key}"):
            try:
                self._client.head_object(Bucket=self._bucket, Key=self._key(key))
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") in MISSING_CODES:
                    return False
                raise

    def put_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> int:
        with s3_errors(self.location, f"uploading {path.name}"):
            return upload_file(_BotoParts(self._client, self._bucket), self._key(key), path, self._part_bytes, progress)

    def get_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> None:
        from boto3.s3.transfer import TransferConfig

        # Parallel ranged GETs: this is the replica's cold start.
        transfer = TransferConfig(multipart_chunksize=self._part_bytes, max_concurrency=8)
        with s3_errors(self.location, f"downloading {key}"):
            self._client.download_file(self._bucket, self._key(key), str(path), Config=transfer,
                                       Callback=progress.advance)

    def read_bytes(self, key: str) -> bytes:
        with s3_errors(self.location, f"reading {key}"):
            return self._client.get_object(Bucket=self._bucket, Key=self._key(key))["Body"].read()

    def create_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        with s3_errors(self.location, f"writing {key}"):
            try:
                self._client.put_object(Bucket=self._bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code", "") in ("PreconditionFailed", "412",
                                                                     "ConditionalRequestConflict"):
                    raise ModelStoreError(f"{key} already exists in {self.location}") from None
                raise

    def keys(self, prefix: str) -> Iterator[str]:
        strip = len(self._key(""))
        with s3_errors(self.location, "listing"):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=self._key(prefix))
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][strip:]

    def delete(self, key: str) -> None:
        with s3_errors(self.location, f"deleting {key}"):
            self._client.delete_object(Bucket=self._bucket, Key=self._key(key))


class _BotoParts:
    def __init__(self, client, bucket: str):
        self._client = client
        self._bucket = bucket

    def unfinished_upload(self, key: str) -> str | None:
        uploads = self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=key).get("Uploads", [])
        mine = sorted((u for u in uploads if u["Key"] == key), key=lambda u: u["Initiated"])
        return mine[-1]["UploadId"] if mine else None

    def start_upload(self, key: str) -> str:
        return self._client.create_multipart_upload(Bucket=self._bucket, Key=key)["UploadId"]

    def finished_parts(self, key: str, upload_id: str) -> list[FinishedPart]:
        pages = self._client.get_paginator("list_parts").paginate(Bucket=self._bucket, Key=key, UploadId=upload_id)
        return [FinishedPart(p["PartNumber"], p["Size"], p["ETag"]) for page in pages for p in page.get("Parts", [])]

    def send_part(self, key: str, upload_id: str, number: int, data: bytes, content_md5: str) -> str:
        return self._client.upload_part(Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                        Body=data, ContentMD5=content_md5)["ETag"]

    def finish_upload(self, key: str, upload_id: str, parts: list[FinishedPart]) -> None:
        self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)

    def put_small(self, key: str, data: bytes, content_md5: str) -> None:
        self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentMD5=content_md5)
