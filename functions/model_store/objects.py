"""Where model files live: the object-store interface, progress reporting, and the local
directory store (the embedded default). S3 and MinIO live in ``s3.py`` and ``minio_objects.py``;
``factory.open_object_store`` picks one from a URI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from functions.common.errors import ModelStoreError

COPY_CHUNK_BYTES = 8 * 1024 * 1024


class Progress(Protocol):
    """What a long transfer reports: a phase with its size in bytes, then bytes done.
    ``advance`` may be called from several threads at once."""

    def phase(self, name: str, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class _NoProgress:
    def phase(self, name: str, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


class ObjectStore(Protocol):
    location: str  # for messages: where the objects are, with no credentials in it

    def exists(self, key: str) -> bool: ...

    def put_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> int:
        """Store the file; returns the bytes actually sent (a resumed upload sends less)."""
        ...

    def get_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def create_bytes(self, key: str, data: bytes) -> None:
        """Write a new object; raises ``ModelStoreError`` if the key already exists."""
        ...

    def keys(self, prefix: str) -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...


class LocalObjectStore:
    """Objects as files under a directory; writes go to a temporary file renamed into place."""

    def __init__(self, root: Path):
        self._root = root.expanduser().resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        self.location = str(self._root)

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if self._root not in path.parents:
            raise ModelStoreError(f"object key outside the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> int:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        _copy(path, partial, progress)
        os.replace(partial, target)
        return path.stat().st_size

    def get_file(self, key: str, path: Path, progress: Progress = NO_PROGRESS) -> None:
        _copy(self._path(key), path, progress)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def create_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        try:
            os.link(partial, target)  # fails if the key exists: two writers never both win
        except FileExistsError:
            raise ModelStoreError(f"{key} already exists in {self.location}") from None
        finally:
            partial.unlink()

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._root / prefix
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
        for path in sorted(start.rglob("*")):
            key = path.relative_to(self._root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.endswith(".partial"):
                yield key

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _copy(source: Path, target: Path, progress: Progress) -> None:
    with source.open("rb") as reader:
        copy_stream(reader, target, progress)


def copy_stream(stream, target: Path, progress: Progress) -> None:
    """Write a response body to ``target`` in chunks, reporting each."""
    with target.open("wb") as writer:
        while chunk := stream.read(COPY_CHUNK_BYTES):
            writer.write(chunk)
            progress.advance(len(chunk))

