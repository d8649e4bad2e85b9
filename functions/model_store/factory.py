"""Which object store a URI names. Apart from the interface (``objects.py``), which the
backends import: they never import this module, so there is no cycle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from functions.common.errors import ModelStoreError
from functions.model_store.objects import LocalObjectStore, ObjectStore

if TYPE_CHECKING:
    from functions.common.settings import Settings


def open_object_store(uri: str, settings: Settings) -> ObjectStore:
    """``s3://bucket/prefix`` (boto3), ``minio://bucket/prefix`` (the MinIO SDK), or a
    directory (a path, or ``file:///path``)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "minio"):
        bucket, prefix = parsed.netloc, parsed.path.strip("/")
        if not bucket:
            raise ModelStoreError(f"no bucket in the model store URI {uri!r}: use {parsed.scheme}://bucket/prefix")
        if parsed.scheme == "s3":
            from functions.model_store.s3 import S3ObjectStore

            return S3ObjectStore.from_settings(bucket, prefix, settings)
        from functions.model_store.minio_objects import MinioObjectStore

        return MinioObjectStore.from_settings(bucket, prefix, settings)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # "C:" style drive letters are paths
        raise ModelStoreError(f"unknown model store {uri!r}: use a directory, s3://bucket/prefix or minio://bucket/prefix")
    return LocalObjectStore(Path(uri))
