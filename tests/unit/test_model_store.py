"""The model store over a local directory: versions, incremental pushes, verified pulls."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.common.clock import FixedClock
from functions.model_store import LocalObjectStore, ModelStore, ModelStoreError, blob_key, parse_ref
from functions.model_store.versions import manifest_key


def model_folder(root: Path, weights: bytes = b"weights-v1", config: str = '{"layers": 2}') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(weights)
    (root / "config.json").write_text(config, encoding="utf-8")
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n", encoding="utf-8")
    return root


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(LocalObjectStore(tmp_path / "store"), FixedClock(1_000_000))


def test_push_then_pull_gives_the_same_files_and_a_manifest(store, tmp_path):
    report = store.push(model_folder(tmp_path / "m"), "demo", source="demo.gguf")
    manifest = report.manifest
    assert (manifest.version, report.files_uploaded, manifest.source, report.new_version) == (1, 3, "demo.gguf", True)
    assert report.bytes_sent == sum(f.size for f in manifest.files)
    assert [f.path for f in manifest.files] == ["config.json", "model.safetensors", "tokenizer/vocab.txt"]
    pulled = store.pull("demo@1", tmp_path / "out")
    assert pulled == manifest
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == b"weights-v1"
    assert (tmp_path / "out" / "tokenizer" / "vocab.txt").read_text(encoding="utf-8") == "a\nb\n"


def test_pushing_again_is_incremental_and_identical_content_is_one_version(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    again = store.push(model_folder(tmp_path / "m"), "demo")
    assert (again.manifest.version, again.files_uploaded, again.new_version) == (1, 0, False)  # the same version
    second = store.push(model_folder(tmp_path / "m2", weights=b"weights-v2"), "demo")
    assert (second.manifest.version, second.files_uploaded, second.bytes_sent) == (2, 1, len(b"weights-v2"))
    assert store.manifest("demo").version == 2 and store.manifest("demo@1").version == 1


def test_a_flipped_byte_fails_verify_and_pull_and_leaves_nothing_behind(store, tmp_path):
    manifest = store.push(model_folder(tmp_path / "m"), "demo").manifest
    weights = next(f for f in manifest.files if f.path == "model.safetensors")
    blob = tmp_path / "store" / blob_key(weights.sha256)
    data = bytearray(blob.read_bytes())
    data[0] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="model.safetensors does not match"):
        store.verify("demo")
    with pytest.raises(ModelStoreError, match="refusing to use it"):
        store.pull("demo", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_retention_keeps_the_newest_and_drops_unused_blobs(store, tmp_path):
    for n in range(4):
        store.push(model_folder(tmp_path / f"m{n}", weights=f"weights-{n}".encode()), "demo")
    assert store.remove("demo", keep_last=2) == [1, 2]
    assert [m.version for m in store.versions("demo")] == [3, 4]
    store.verify("demo@3")
    blobs = list(LocalObjectStore(tmp_path / "store").keys("blobs/"))
    assert len(blobs) == 4  # two weights, and the config and vocab both versions share


@pytest.mark.parametrize("ref", ["", "../etc", "a/b", ".hidden"])
def test_bad_names_are_refused(ref):
    with pytest.raises(ModelStoreError):
        parse_ref(ref)


def test_missing_models_and_versions_say_what_exists(store, tmp_path):
    store.push(model_folder(tmp_path / "m"), "demo")
    with pytest.raises(ModelStoreError, match="no model named 'other'"):
        store.manifest("other")
    with pytest.raises(ModelStoreError, match=r"no version 7 \(versions: 1\)"):
        store.manifest("demo@7")


def test_the_command_line_pushes_lists_and_fails_verify_loudly(tmp_path, capsys):
    import json

    from functions.cli.main import main

    folder, root = model_folder(tmp_path / "m"), tmp_path / "store"
    assert main(["model", "push", str(folder), "--name", "demo", "--source", "demo.gguf", "--store", str(root)]) == 0
    assert main(["model", "ls", "--json", "--store", str(root)]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(v["name"], v["version"], v["files"]) for v in listing["versions"]] == [("demo", 1, 3)]
    assert main(["model", "verify", "demo", "--store", str(root)]) == 0
    blob = next(p for p in (root / "blobs" / "sha256").iterdir() if p.read_bytes() == b"weights-v1")
    blob.write_bytes(b"weights-v2")
    assert main(["model", "verify", "demo@1", "--store", str(root)]) == 2
    assert "does not match its manifest" in capsys.readouterr().err


def test_a_version_number_is_never_written_twice(store, tmp_path):
    """Two pushes racing for the same number: the second manifest write fails, never overwrites."""
    manifest = store.push(model_folder(tmp_path / "m"), "demo").manifest
    objects = LocalObjectStore(tmp_path / "store")
    with pytest.raises(ModelStoreError, match="already exists"):
        objects.create_bytes(manifest_key("demo", 1), b"{}")
    assert store.manifest("demo@1") == manifest


def test_progress_covers_hashing_and_every_byte_uploaded(store, tmp_path):
    class Recorder:
        def __init__(self):
            self.phases: list[tuple[str, int]] = []
            self.done: dict[str, int] = {}

        def phase(self, name, total_bytes):
            self.phases.append((name, total_bytes))
            self.done[name] = 0

        def advance(self, nbytes):
            self.done[self.phases[-1][0]] += nbytes

    recorder = Recorder()
    manifest = store.push(model_folder(tmp_path / "m"), "demo", progress=recorder).manifest
    total = sum(f.size for f in manifest.files)
    assert recorder.phases == [("hashing", total), ("uploading", total)]
    assert recorder.done == {"hashing": total, "uploading": total}
    store.pull("demo", tmp_path / "out", progress=recorder)
    assert recorder.phases[-1] == ("downloading", total) and recorder.done["downloading"] == total
