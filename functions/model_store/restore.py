"""A replica's model, restored from the store into a local cache shared by the node.

``<cache>/versions/<name>@<version>/`` holds one verified version; a file lock beside it makes
replicas that start together wait for the first one's download instead of fetching again.
A pull checks every byte against the manifest before the folder appears at all. A cached
folder is checked on every start: each file against the size and modification time it had
when it was verified (``rehash=True`` recomputes every SHA-256 instead), and a copy that no
longer matches is thrown away and pulled again. A pinned, cached version starts without
touching the store, so a store outage does not stop replicas from scaling out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from functions.common.errors import ModelStoreError
from functions.model_store.objects import NO_PROGRESS, Progress
from functions.model_store.versions import MANIFEST, Manifest, ModelStore, file_sha256, parse_ref

log = logging.getLogger(__name__)

VERIFIED_RECORD = ".verified.json"


@dataclass(frozen=True)
class Restored:
    path: Path
    manifest: Manifest
    downloaded: bool  # False: served from the cache


def cached_version_dir(cache_dir: Path, name: str, version: int | str) -> Path:
    return cache_dir / "versions" / f"{name}@{version}"


def restore_model(store: ModelStore | Callable[[], ModelStore], ref: str, cache_dir: Path, *,
                  rehash: bool = False, progress: Progress = NO_PROGRESS) -> Restored:
    """``store`` may be a function that opens it: a cached pinned version then never opens
    the store at all (creating an S3 client alone takes a noticeable part of a warm start)."""
    opened: list[ModelStore] = [store] if isinstance(store, ModelStore) else []

    def the_store() -> ModelStore:
        if not opened:
            opened.append(store())
        return opened[0]

    name, version = parse_ref(ref)
    expected: Manifest | None = None
    if version == "latest":  # only the store knows which version that is
        expected = the_store().manifest(ref)
        version = str(expected.version)
    target = cached_version_dir(cache_dir, name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_name(f".{target.name}.lock")):
        if target.exists():
            cached = _check_cached(target, expected, rehash)
            if cached is not None:
                return Restored(target, cached, downloaded=False)
            log.warning("the cached copy of %s@%s does not match its manifest: pulling it again", name, version)
            shutil.rmtree(target)
        manifest = the_store().pull(f"{name}@{version}", target, progress)
        _write_verified_record(target, manifest)
        return Restored(target, manifest, downloaded=True)


def verify_local(manifest: Manifest, cache_dir: Path, progress: Progress = NO_PROGRESS) -> Path | None:
    """Re-hash the cached copy of ``manifest``'s version, if there is one; raises on a mismatch."""
    folder = cached_version_dir(cache_dir, manifest.name, manifest.version)
    if not folder.exists():
        return None
    progress.phase("verifying the cache", sum(f.size for f in manifest.files))
    for stored in manifest.files:
        path = folder / stored.path
        if not path.is_file() or path.stat().st_size != stored.size or file_sha256(path, progress) != stored.sha256:
            raise ModelStoreError(f"{manifest.name}@{manifest.version}: the cached {path} does not match the manifest "
                                  "(the next replica start pulls it again)")
    return folder


def _check_cached(folder: Path, expected: Manifest | None, rehash: bool) -> Manifest | None:
    """The cached version's manifest if every file still matches it; None otherwise."""
    try:
        manifest = Manifest.from_json((folder / MANIFEST).read_bytes())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if expected is not None and manifest.content_hash != expected.content_hash:
        # Versions are immutable: the same number with other content is not ours to paper over.
        raise ModelStoreError(f"{manifest.name}@{manifest.version} in the cache ({folder}) has other content than "
                              "the store's: the store was rewritten; remove the cached folder to accept it")
    record = _read_verified_record(folder)
    rehashed = False
    for stored in manifest.files:
        path = folder / stored.path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        if not rehash and record.get(stored.path) == [stat.st_size, stat.st_mtime_ns]:
            continue
        if stat.st_size != stored.size or file_sha256(path) != stored.sha256:
            return None
        rehashed = True
    if rehashed:  # a warm start that only compared stats writes nothing
        _write_verified_record(folder, manifest)
    return manifest


def _read_verified_record(folder: Path) -> dict[str, list[int]]:
    try:
        return json.loads((folder / VERIFIED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_verified_record(folder: Path, manifest: Manifest) -> None:
    record = {}
    for stored in manifest.files:
        stat = (folder / stored.path).stat()
        record[stored.path] = [stat.st_size, stat.st_mtime_ns]
    partial = folder / f"{VERIFIED_RECORD}.partial"
    partial.write_text(json.dumps(record), encoding="utf-8")
    os.replace(partial, folder / VERIFIED_RECORD)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One process at a time per cached version; the kernel drops the lock if its holder dies."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
