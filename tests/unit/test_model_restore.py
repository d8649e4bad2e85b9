"""Replica restore over a local store (the cache, its lock and its checks), and the resumable
multipart algorithm over an in-memory S3 stand-in. The same paths run against a real S3
server in tests/integration/test_model_store_s3.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from functions.common.clock import FixedClock
from functions.model_store import LocalObjectStore, ModelStore, ModelStoreError, restore_model
from functions.model_store.multipart import FinishedPart, upload_file
from functions.model_store.objects import NO_PROGRESS
from functions.model_store.restore import verify_local
from tests.unit.test_model_store import model_folder


class CountingStore(ModelStore):
    def __init__(self, root: Path):
        super().__init__(LocalObjectStore(root), FixedClock(1_000_000))
        self.pulls = 0
        self.lookups = 0

    def pull(self, ref, destination, progress=NO_PROGRESS):
        self.pulls += 1
        return super().pull(ref, destination, progress)

    def manifest(self, ref):
        self.lookups += 1
        return super().manifest(ref)


@pytest.fixture
def store(tmp_path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def test_a_cached_pinned_version_starts_without_touching_the_store(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    first = restore_model(store, "demo@1", tmp_path / "cache")
    assert first.downloaded and (first.path / "model.safetensors").read_bytes() == b"weights-v1"
    store.pulls = store.lookups = 0
    again = restore_model(store, "demo@1", tmp_path / "cache")
    assert (again.downloaded, again.path, store.pulls, store.lookups) == (False, first.path, 0, 0)

    def store_down():
        raise ModelStoreError("cannot reach the store")

    assert not restore_model(store_down, "demo@1", tmp_path / "cache").downloaded  # an outage does not matter
    with pytest.raises(ModelStoreError, match="cannot reach"):
        restore_model(store_down, "demo@2", tmp_path / "cache")


def test_latest_asks_the_store_which_version_and_pulls_a_new_one(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    assert restore_model(store, "demo", tmp_path / "cache").manifest.version == 1
    store.push(model_folder(tmp_path / "m2", weights=b"weights-v2"), "demo")
    newest = restore_model(store, "demo", tmp_path / "cache")
    assert (newest.manifest.version, newest.downloaded) == (2, True)
    assert (newest.path / "model.safetensors").read_bytes() == b"weights-v2"


def test_a_changed_cached_file_is_caught_and_pulled_again(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    restored = restore_model(store, "demo@1", tmp_path / "cache")
    weights = restored.path / "model.safetensors"
    weights.write_bytes(b"weights-vX")  # same size, new mtime: re-hashed, then re-pulled
    with pytest.raises(ModelStoreError, match="does not match the manifest"):
        verify_local(restored.manifest, tmp_path / "cache")
    again = restore_model(store, "demo@1", tmp_path / "cache")
    assert again.downloaded and weights.read_bytes() == b"weights-v1"
    assert verify_local(again.manifest, tmp_path / "cache") == again.path


def test_rehash_catches_a_change_that_kept_size_and_mtime(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    weights = restore_model(store, "demo@1", tmp_path / "cache").path / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"weights-vX")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot: the record still matches
    assert not restore_model(store, "demo@1", tmp_path / "cache").downloaded
    assert restore_model(store, "demo@1", tmp_path / "cache", rehash=True).downloaded
    assert weights.read_bytes() == b"weights-v1"


def test_a_corrupted_store_copy_never_reaches_the_cache(store, tmp_path):
    manifest = store.push(model_folder(tmp_path / "m"), "demo").manifest
    blob = next(p for p in (tmp_path / "store" / "blobs" / "sha256").iterdir() if p.read_bytes() == b"weights-v1")
    blob.write_bytes(b"weights-v2")
    with pytest.raises(ModelStoreError, match="refusing to use it"):
        restore_model(store, "demo@1", tmp_path / "cache")
    assert not (tmp_path / "cache" / "versions" / f"demo@{manifest.version}").exists()


def test_replicas_restoring_at_once_download_once(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    start = threading.Barrier(4)
    results = []

    def replica():
        start.wait()
        results.append(restore_model(store, "demo@1", tmp_path / "cache"))

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.downloaded for r in results) == [False, False, False, True]
    assert store.pulls == 1 and len({r.path for r in results}) == 1


class MemoryParts:
    """An S3 multipart API in memory, counting what was sent."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, tuple[str, dict[int, bytes]]] = {}
        self.sent_parts: list[int] = []
        self.aborted = 0
        self.fail_at_part: int | None = None

    def unfinished_upload(self, key):
        return self.uploads[key][0] if key in self.uploads else None

    def start_upload(self, key):
        self.uploads[key] = (f"upload-{len(self.sent_parts)}", {})
        return self.uploads[key][0]

    def finished_parts(self, key, upload_id):
        return [FinishedPart(n, len(data), f"etag-{n}") for n, data in sorted(self.uploads[key][1].items())]

    def send_part(self, key, upload_id, number, data, content_md5):
        if number == self.fail_at_part:
            raise ConnectionResetError("the line dropped")
        self.uploads[key][1][number] = data
        self.sent_parts.append(number)
        return f"etag-{number}"

    def finish_upload(self, key, upload_id, parts):
        received = self.uploads.pop(key)[1]
        assert [p.number for p in parts] == sorted(received)
        self.objects[key] = b"".join(received[p.number] for p in parts)

    def abort_upload(self, key, upload_id):
        self.uploads.pop(key)
        self.aborted += 1

    def put_small(self, key, data, content_md5):
        self.objects[key] = data


def test_an_interrupted_multipart_upload_sends_only_the_missing_parts(tmp_path):
    data = bytes(range(256)) * 100  # 25,600 bytes: 7 parts of 4,000
    path = tmp_path / "weights"
    path.write_bytes(data)
    parts = MemoryParts()
    parts.fail_at_part = 5
    with pytest.raises(ConnectionResetError):
        upload_file(parts, "blob", path, 4000, NO_PROGRESS)
    finished_before = set(parts.uploads["blob"][1])
    assert 5 not in finished_before and "blob" not in parts.objects
    parts.fail_at_part, parts.sent_parts = None, []
    sent = upload_file(parts, "blob", path, 4000, NO_PROGRESS)
    assert sorted(parts.sent_parts) == sorted(set(range(1, 8)) - finished_before)
    assert sent == sum(min(4000, len(data) - (n - 1) * 4000) for n in parts.sent_parts)
    assert parts.objects["blob"] == data


def test_parts_cut_with_another_part_size_are_thrown_away(tmp_path):
    path = tmp_path / "weights"
    path.write_bytes(b"x" * 10_000)
    parts = MemoryParts()
    parts.fail_at_part = 3
    with pytest.raises(ConnectionResetError):
        upload_file(parts, "blob", path, 3000, NO_PROGRESS)
    parts.fail_at_part, parts.sent_parts = None, []
    assert upload_file(parts, "blob", path, 4000, NO_PROGRESS) == 10_000
    assert parts.aborted == 1 and parts.objects["blob"] == b"x" * 10_000
