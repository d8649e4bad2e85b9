"""Versioned, verified model weights in a directory, S3 or MinIO (see ``versions.py``)."""

from __future__ import annotations

from functions.common.errors import ModelStoreError
from functions.model_store.factory import open_object_store
from functions.model_store.objects import NO_PROGRESS, LocalObjectStore, ObjectStore, Progress
from functions.model_store.restore import Restored, cached_version_dir, restore_model
from functions.model_store.versions import (
    Manifest,
    ModelStore,
    PushReport,
    StoredFile,
    blob_key,
    content_hash,
    parse_ref,
)


def open_model_store(settings, uri: str | None = None) -> ModelStore:
    """The store at ``uri``, or at ``WXA_MODEL_STORE`` (default: a directory under the home)."""
    return ModelStore(open_object_store(uri or settings.model_store_uri(), settings))


__all__ = [
    "NO_PROGRESS", "LocalObjectStore", "Manifest", "ModelStore", "ModelStoreError", "ObjectStore", "Progress",
    "PushReport", "Restored", "StoredFile", "blob_key", "cached_version_dir", "content_hash", "open_model_store",
    "open_object_store", "parse_ref", "restore_model",
]
