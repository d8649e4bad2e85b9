"""The model store: versioned, verified copies of model weights.

A model version is a folder of files plus a manifest: every file's name, size and SHA-256, the
source it came from (e.g. the GGUF it was converted from), when it was made, and a content
hash of the whole version. Versions are immutable and numbered 1, 2, …; ``latest`` is the
highest. Files are stored once, by content (``blobs/sha256/<hash>``), so pushing a version
that shares files with an earlier one uploads only what changed, and the manifest is written
last: a version exists only once every file it names is stored.

Pulling checks every byte against the manifest while writing into a temporary folder that is
renamed into place only when complete, so a corrupted or half-copied model is never loaded.

This module holds the store's logic over the small object-store interface in ``objects.py``
(a directory, S3 through boto3, or MinIO through its SDK).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from functions.common.clock import Clock, SystemClock
from functions.common.errors import ModelStoreError
from functions.model_store.objects import NO_PROGRESS, ObjectStore, Progress

CHUNK_BYTES = 8 * 1024 * 1024
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the version folder, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    files: tuple[StoredFile, ...]
    source: str
    created_s: float
    content_hash: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "files": [asdict(f) for f in self.files]}, ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Manifest:
        data = json.loads(raw)
        return cls(**{**data, "files": tuple(StoredFile(**f) for f in data["files"])})


@dataclass(frozen=True)
class PushReport:
    manifest: Manifest
    files_uploaded: int  # files the store did not have yet
    bytes_sent: int  # what went over the wire: parts an interrupted push finished are not sent again
    new_version: bool  # False: a version with exactly these files already existed


def file_sha256(path: Path, progress: Progress = NO_PROGRESS) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            progress.advance(len(chunk))
    return digest.hexdigest()


def content_hash(files: tuple[StoredFile, ...]) -> str:
    """One hash for a version's files: their names, sizes and hashes, in name order."""
    lines = "".join(f"{f.path}\0{f.size}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def manifest_key(name: str, version: int) -> str:
    return f"models/{name}/{version}/{MANIFEST}"


def parse_ref(ref: str) -> tuple[str, str]:
    """``name`` or ``name@version`` (``latest`` when no version is given)."""
    name, _, version = ref.partition("@")
    if not name or "/" in name or name.startswith("."):
        raise ModelStoreError(f"not a model name: {ref!r}")
    return name, version or "latest"


class ModelStore:
    def __init__(self, objects: ObjectStore, clock: Clock | None = None):
        self._objects = objects
        self._clock = clock or SystemClock()

    @property
    def location(self) -> str:
        return self._objects.location

    def push(self, folder: Path, name: str, *, source: str = "", progress: Progress = NO_PROGRESS) -> PushReport:
        """Store ``folder`` as a new version of ``name``, or return the version that already
        holds exactly these files. Files the store has (by hash) are not uploaded again, and
        an upload interrupted earlier resumes from its last finished part."""
        parse_ref(name)
        paths = sorted(p for p in folder.rglob("*") if p.is_file())
        if not paths:
            raise ModelStoreError(f"{folder} has no files to push")
        progress.phase("hashing", sum(p.stat().st_size for p in paths))
        files = tuple(StoredFile(p.relative_to(folder).as_posix(), p.stat().st_size, file_sha256(p, progress))
                      for p in paths)
        digest = content_hash(files)
        existing = self.versions(name)
        for manifest in existing:
            if manifest.content_hash == digest:
                return PushReport(manifest, 0, 0, new_version=False)
        progress.phase("uploading", sum(f.size for f in files))
        uploaded = sent = 0
        for path, stored in zip(paths, files, strict=True):
            if self._objects.exists(blob_key(stored.sha256)):  # incremental: known content is kept
                progress.advance(stored.size)
                continue
            sent += self._objects.put_file(blob_key(stored.sha256), path, progress)
            uploaded += 1
        version = max((m.version for m in existing), default=0) + 1
        manifest = Manifest(name, version, files, source, self._clock.now_s(), digest)
        # Written last and only if absent: a version exists once all its files do, and two
        # pushes racing for one version number cannot overwrite each other.
        self._objects.create_bytes(manifest_key(name, version), manifest.to_json().encode("utf-8"))
        return PushReport(manifest, uploaded, sent, new_version=True)

    def versions(self, name: str) -> list[Manifest]:
        manifests = []
        for key in self._objects.keys(f"models/{name}/"):
            if key.endswith(f"/{MANIFEST}"):
                manifests.append(Manifest.from_json(self._objects.read_bytes(key)))
        return sorted(manifests, key=lambda m: m.version)

    def names(self) -> list[str]:
        return sorted({key.split("/")[1] for key in self._objects.keys("models/") if key.endswith(f"/{MANIFEST}")})

    def manifest(self, ref: str) -> Manifest:
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            raise ModelStoreError(f"no model named {name!r} in the store")
        if version == "latest":
            return versions[-1]
        found = next((m for m in versions if str(m.version) == version), None)
        if found is None:
            raise ModelStoreError(f"{name} has no version {version} (versions: {', '.join(str(m.version) for m in versions)})")
        return found

    def pull(self, ref: str, destination: Path, progress: Progress = NO_PROGRESS) -> Manifest:
        """Copy a version into ``destination`` (created; must not exist), every file checked."""
        manifest = self.manifest(ref)
        if destination.exists():
            raise ModelStoreError(f"{destination} already exists")
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
        progress.phase("downloading", sum(f.size for f in manifest.files))
        try:
            for stored in manifest.files:
                target = staging / stored.path
                target.parent.mkdir(parents=True, exist_ok=True)
                self._get_blob(manifest, stored, target, progress)
                _check(target, stored, f"{manifest.name}@{manifest.version}")
            (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
            os.rename(staging, destination)  # complete, or not there at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return manifest

    def verify(self, ref: str, progress: Progress = NO_PROGRESS) -> Manifest:
        """Recompute every stored file's hash; raises on the first that does not match."""
        manifest = self.manifest(ref)
        if content_hash(manifest.files) != manifest.content_hash:
            raise ModelStoreError(f"{manifest.name}@{manifest.version}: the manifest does not match its content hash")
        progress.phase("verifying", sum(f.size for f in manifest.files))
        with tempfile.TemporaryDirectory(prefix="wxassist-verify-") as scratch:
            for stored in manifest.files:
                copy = Path(scratch) / "blob"
                self._get_blob(manifest, stored, copy, progress)
                _check(copy, stored, f"{manifest.name}@{manifest.version}")
                copy.unlink()
        return manifest

    def _get_blob(self, manifest: Manifest, stored: StoredFile, target: Path, progress: Progress) -> None:
        if not self._objects.exists(blob_key(stored.sha256)):
            raise ModelStoreError(f"{manifest.name}@{manifest.version}: {stored.path} is missing from the store")
        self._objects.get_file(blob_key(stored.sha256), target, progress)

    def remove(self, name: str, *, keep_last: int) -> list[int]:
        """Delete all but the newest ``keep_last`` versions, and blobs no version uses."""
        if keep_last < 1:
            raise ModelStoreError("keep at least the newest version")
        versions = self.versions(name)
        doomed = versions[:-keep_last]
        for manifest in doomed:
            self._objects.delete(manifest_key(manifest.name, manifest.version))
        in_use = {f.sha256 for other in self.names() for m in self.versions(other) for f in m.files}
        for key in list(self._objects.keys("blobs/sha256/")):
            if key.rsplit("/", 1)[-1] not in in_use:
                self._objects.delete(key)
        return [m.version for m in doomed]


def _check(path: Path, stored: StoredFile, version: str) -> None:
    size, digest = path.stat().st_size, file_sha256(path)
    if size != stored.size or digest != stored.sha256:
        raise ModelStoreError(f"{version}: {stored.path} does not match its manifest (sha256 {digest[:12]}…, "
                              f"expected {stored.sha256[:12]}…): refusing to use it")
