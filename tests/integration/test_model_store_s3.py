"""The model store against a real S3 server (SeaweedFS ``weed mini`` on 127.0.0.1), through
boto3 (``s3://``) and the MinIO SDK (``minio://``): the demo model's backup and restore,
an upload killed mid-way, a corrupted store, replicas starting together, and the checksum
settings S3-compatible servers need."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from functions.common.errors import ModelStoreError
from functions.model_store import ModelStore, blob_key, open_model_store, restore_model
from functions.model_store.s3 import S3ObjectStore, s3_client
from functions.common.records import Passage
from functions.common.settings import Settings
from tests.fakes import REPO, demo_model_dir
from tests.net import SlowLink
from tests.unit.test_model_store import model_folder

BACKENDS = ["s3", "minio"]


@pytest.fixture(scope="module", autouse=True)
def s3_credentials(s3_server):
    """Keys the way operators give them: the standard AWS variables (boto3's chain reads them;
    minio:// falls back to them)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.environment().items():
            if name != "WXA_S3_ENDPOINT":
                patch.setenv(name, value)
        yield


def new_bucket(s3_server, backend: str) -> str:
    bucket = f"wxa-{backend}-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)  # versioning on, as the Pulumi stack creates it
    return bucket


def settings_for(s3_server, tmp_path: Path, **extra) -> Settings:
    return Settings(home=tmp_path / "home", s3_endpoint=s3_server.endpoint, s3_region="us-east-1", **extra)


@pytest.fixture(scope="module", params=BACKENDS)
def pushed_demo(request, s3_server, tmp_path_factory):
    """The demo model (541 MB, 6 files) backed up once per backend for this module."""
    uri = f"{request.param}://{new_bucket(s3_server, request.param)}/models"
    settings = settings_for(s3_server, tmp_path_factory.mktemp("demo"))
    report = open_model_store(settings, uri).push(demo_model_dir(), "demo", source="bundled SmolLM2 GGUF")
    return uri, report


def test_the_demo_model_backs_up_restores_and_verifies(pushed_demo, s3_server, tmp_path):
    uri, report = pushed_demo
    source = demo_model_dir()
    assert report.new_version and report.files_uploaded == 6
    assert report.bytes_sent == sum(p.stat().st_size for p in source.iterdir() if p.is_file())
    store = open_model_store(settings_for(s3_server, tmp_path), uri)
    assert [(m.name, m.version) for m in store.versions("demo")] == [("demo", 1)]
    store.verify("demo@1")
    pulled = store.pull("demo", tmp_path / "pulled")
    assert pulled == report.manifest
    for stored in report.manifest.files:
        assert (tmp_path / "pulled" / stored.path).read_bytes() == (source / stored.path).read_bytes()
    again = store.push(source, "demo")  # an unchanged backup costs nothing
    assert (again.new_version, again.files_uploaded, again.bytes_sent) == (False, 0, 0)


def test_a_replica_starts_from_the_store_then_from_its_cache(pushed_demo, s3_server, tmp_path):
    from functions.generate.deployment import GenerateServer

    uri, _ = pushed_demo
    overrides = {"home": str(tmp_path / "home"), "model": "demo@1", "model_store": uri,
                 "model_cache": str(tmp_path / "cache"), "s3_endpoint": s3_server.endpoint, "s3_region": "us-east-1",
                 "max_new_tokens": 8}
    replica = GenerateServer(settings_overrides=overrides)
    passage = Passage("faq-1", "faq", "faq.jsonl", "退货政策", "收到商品7天内可无理由退货。", 1.0)
    answer = asyncio.run(replica.answer("怎么退货？", [passage]))
    assert answer.model == "demo@1" and answer.text  # the real model, loaded from the restored copy
    store = open_model_store(settings_for(s3_server, tmp_path), uri)
    assert not restore_model(store, "demo@1", tmp_path / "cache").downloaded


RESTORE_SCRIPT = """
import json, pathlib, sys, time
from functions.model_store import open_model_store, restore_model
from functions.common.settings import load_settings
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
settings = load_settings()
restored = restore_model(open_model_store(settings), "demo@1", settings.model_cache_dir())
print(json.dumps({"downloaded": restored.downloaded, "path": str(restored.path)}))
"""


def test_two_replicas_restoring_at_once_download_once(pushed_demo, s3_server, tmp_path):
    uri, _ = pushed_demo
    go = tmp_path / "go"
    env = {**os.environ, **s3_server.environment(), "WXA_HOME": str(tmp_path / "home"), "WXA_MODEL_STORE": uri,
           "WXA_MODEL_CACHE": str(tmp_path / "node-cache")}
    replicas = [subprocess.Popen([sys.executable, "-c", RESTORE_SCRIPT, str(go)], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)  # both are importing and waiting at the start line
    go.touch()
    results = []
    for replica in replicas:
        out, err = replica.communicate(timeout=300)
        assert replica.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["downloaded"] for r in results) == [False, True]
    assert len({r["path"] for r in results}) == 1


def big_model_folder(root: Path, megabytes: int) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}', encoding="utf-8")
    (root / "weights.bin").write_bytes(os.urandom(megabytes << 20))
    return root


def finished_parts(s3_server, bucket: str, key: str) -> list[int]:
    client = s3_server.boto3_client()
    uploads = [u for u in client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) if u["Key"] == key]
    sizes = []
    for upload in uploads:
        sizes += [p["Size"] for p in client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", [])]
    return sizes


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_upload_killed_midway_resumes_without_resending_finished_parts(backend, s3_server, tmp_path):
    bucket = new_bucket(s3_server, backend)
    folder = big_model_folder(tmp_path / "model", megabytes=60)
    weights = folder / "weights.bin"
    from functions.model_store.versions import file_sha256

    key = f"models/{blob_key(file_sha256(weights))}"
    uri = f"{backend}://{bucket}/models"
    with SlowLink(s3_server.port, bytes_per_s=8 << 20) as link:  # 60 MB take ~8 s: time to pull the plug
        env = {**os.environ, **s3_server.environment(), "WXA_S3_ENDPOINT": f"http://127.0.0.1:{link.port}",
               "WXA_HOME": str(tmp_path / "home"), "WXA_MODEL_PART_MB": "5"}
        push = subprocess.Popen([sys.executable, "-m", "functions.cli.main", "model", "push", str(folder), "--name", "big",
                                 "--store", uri], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(finished_parts(s3_server, bucket, key)) < 3:
            assert push.poll() is None, push.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no parts arrived"
            time.sleep(0.05)
        push.send_signal(signal.SIGKILL)  # the push dies with parts in flight
        push.wait()
    time.sleep(0.5)  # whatever the server was still receiving is gone with the connections
    kept = finished_parts(s3_server, bucket, key)
    size = weights.stat().st_size
    assert 3 <= len(kept) < 12 and not s3_server.boto3_client().list_objects_v2(Bucket=bucket, Prefix=key).get("Contents")

    store = open_model_store(settings_for(s3_server, tmp_path, model_part_mb=5), uri)
    report = store.push(folder, "big")
    assert report.files_uploaded == 1  # config.json went up before the kill
    assert report.bytes_sent == size - sum(kept)  # only the parts that had not arrived
    store.verify("big@1")
    store.pull("big@1", tmp_path / "pulled")
    assert (tmp_path / "pulled" / "weights.bin").read_bytes() == weights.read_bytes()


def corrupt_blob(s3_server, bucket: str, sha256: str) -> None:
    client = s3_server.boto3_client()
    key = f"models/{blob_key(sha256)}"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flipped_byte_in_the_store_fails_verify_and_replica_start(backend, s3_server, tmp_path, capsys):
    from functions.generate.deployment import GenerateServer
    from functions.cli.main import main

    bucket = new_bucket(s3_server, backend)
    uri = f"{backend}://{bucket}/models"
    manifest = open_model_store(settings_for(s3_server, tmp_path), uri).push(model_folder(tmp_path / "m"), "demo").manifest
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WXA_S3_ENDPOINT", s3_server.endpoint)
        patch.setenv("WXA_HOME", str(tmp_path / "home"))
        assert main(["model", "verify", "demo", "--store", uri]) == 0
        corrupt_blob(s3_server, bucket, next(f.sha256 for f in manifest.files if f.path == "model.safetensors"))
        assert main(["model", "verify", "demo", "--store", uri]) == 2
    assert "model.safetensors does not match its manifest" in capsys.readouterr().err
    overrides = {"home": str(tmp_path / "home"), "model": "demo@1", "model_store": uri,
                 "model_cache": str(tmp_path / "cache"), "s3_endpoint": s3_server.endpoint, "s3_region": "us-east-1"}
    with pytest.raises(ModelStoreError, match="refusing to use it"):
        GenerateServer(settings_overrides=overrides)
    assert not (tmp_path / "cache" / "versions" / "demo@1").exists()


def test_boto3_sends_no_default_checksums_to_s3_compatible_servers(s3_server, tmp_path):
    """boto3 ≥ 1.36 adds CRC32 checksum headers to every upload by default, which some
    S3-compatible servers reject; the store's client sends them only when an API needs them."""
    bucket = new_bucket(s3_server, "s3")

    def uploads_with(client) -> list[dict[str, str]]:
        seen = []
        client.meta.events.register("before-send.s3", lambda request, **_: seen.append(dict(request.headers)))
        store = ModelStore(S3ObjectStore(client, bucket, f"check-{uuid.uuid4().hex[:8]}", part_bytes=5 << 20))
        store.push(big_model_folder(tmp_path / uuid.uuid4().hex, megabytes=11), "demo")
        return seen

    def checksum_headers(requests: list[dict[str, str]]) -> set[str]:
        return {name.lower() for headers in requests for name in headers
                if name.lower().startswith(("x-amz-checksum", "x-amz-sdk-checksum"))}

    ours = s3_client(endpoint=s3_server.endpoint, region="us-east-1")
    assert checksum_headers(uploads_with(ours)) == set()
    import boto3

    default = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    assert checksum_headers(uploads_with(default))  # without the setting, they are there


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_bucket_or_wrong_keys_are_clear_errors_without_the_secret(backend, s3_server, tmp_path):
    settings = settings_for(s3_server, tmp_path)
    with pytest.raises(ModelStoreError, match="does not exist"):
        open_model_store(settings, f"{backend}://wxa-no-such-bucket/models").names()
    bucket = new_bucket(s3_server, backend)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key")
        with pytest.raises(ModelStoreError, match="refused the credentials") as refused:
            open_model_store(settings, f"{backend}://{bucket}/models").names()
    assert "not-the-secret-key" not in str(refused.value)
