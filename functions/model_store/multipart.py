"""Resumable multipart uploads, the same for every S3-compatible client.

A blob's key is the SHA-256 of its content, so an unfinished multipart upload found under
that key was sending these very bytes: its finished parts (each checked by the server against
the Content-MD5 we sent with it) are kept, and only the missing parts go over the wire.
Part ETags are only the handles S3 needs to assemble the object, never treated as checksums:
the whole file's SHA-256 is checked on every pull and by ``verify``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from functions.model_store.objects import Progress

PART_WORKERS = 4  # parts in flight at once; each holds one part in memory


@dataclass(frozen=True)
class FinishedPart:
    number: int
    size: int
    etag: str


class PartUploads(Protocol):
    """The multipart calls of one S3 client, by object key."""

    def unfinished_upload(self, key: str) -> str | None: ...

    def start_upload(self, key: str) -> str: ...

    def finished_parts(self, key: str, upload_id: str) -> list[FinishedPart]: ...

    def send_part(self, key: str, upload_id: str, number: int, data: bytes, content_md5: str) -> str: ...

    def finish_upload(self, key: str, upload_id: str, parts: list[FinishedPart]) -> None: ...

    def abort_upload(self, key: str, upload_id: str) -> None: ...

    def put_small(self, key: str, data: bytes, content_md5: str) -> None: ...


def content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def upload_file(uploads: PartUploads, key: str, path: Path, part_bytes: int, progress: Progress) -> int:
    """Upload ``path`` to ``key``, resuming an unfinished upload of it; returns bytes sent."""
    size = path.stat().st_size
    if size <= part_bytes:
        data = path.read_bytes()
        uploads.put_small(key, data, content_md5(data))
        progress.advance(size)
        return size
    count = math.ceil(size / part_bytes)

    def expected_size(number: int) -> int:
        return min(part_bytes, size - (number - 1) * part_bytes)

    upload_id = uploads.unfinished_upload(key)
    finished: dict[int, FinishedPart] = {}
    if upload_id is not None:
        finished = {part.number: part for part in uploads.finished_parts(key, upload_id)}
        if any(n > count or part.size != expected_size(n) for n, part in finished.items()):
            uploads.abort_upload(key, upload_id)  # cut with another part size: start over
            upload_id, finished = None, {}
    if upload_id is None:
        upload_id = uploads.start_upload(key)
    for part in finished.values():
        progress.advance(part.size)

    sent = 0
    sent_lock = threading.Lock()

    def send(number: int) -> FinishedPart:
        nonlocal sent
        with path.open("rb") as handle:
            handle.seek((number - 1) * part_bytes)
            data = handle.read(part_bytes)
        etag = uploads.send_part(key, upload_id, number, data, content_md5(data))
        progress.advance(len(data))
        with sent_lock:
            sent += len(data)
        return FinishedPart(number, len(data), etag)

    missing = [n for n in range(1, count + 1) if n not in finished]
    with ThreadPoolExecutor(max_workers=PART_WORKERS, thread_name_prefix="wxassist-part") as pool:
        for part in pool.map(send, missing):
            finished[part.number] = part
    uploads.finish_upload(key, upload_id, [finished[n] for n in range(1, count + 1)])
    return sent
