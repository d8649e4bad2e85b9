"""One real Ray Serve instance for the whole session (Ray takes ~15 s to start on 2 cores):
the full application from deploy/local.yaml, the converted demo model, the sample corpus in
a fresh Milvus Lite directory, development credentials in a temporary home."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from functions.common.settings import AccountConfig, Settings, ensure_dev_credentials
from knowledge import SAMPLE_CORPUS_DIR

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningService:
    base_url: str
    home: Path
    account: AccountConfig


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> RunningService:
    import ray
    from ray import serve

    from functions.common.knowledge_base import KnowledgeBase, SentenceEmbedder
    from functions.generate.gguf_import import bundled_gguf, import_gguf
    from knowledge.ingest import ingest
    from serve_app import APP_NAME, DEFAULT_SERVE_CONFIG, compose_app, read_serve_config

    home = tmp_path_factory.mktemp("wxassist-home")
    ensure_dev_credentials(home)
    settings = Settings(home=home, model_store=REPO / ".wxassist" / "models")
    if not (settings.model_dir() / "model.safetensors").is_file():  # make setup normally did this
        import_gguf(bundled_gguf(), settings.model_dir())
    with KnowledgeBase(settings.kb_location(), settings.kb_collection, SentenceEmbedder(settings.embedding_dir())) as kb:
        ingest(kb, [SAMPLE_CORPUS_DIR])

    _, app_args, options = read_serve_config(DEFAULT_SERVE_CONFIG)
    port = _free_port()
    ray.init(include_dashboard=False, logging_level="WARNING", num_cpus=2)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = compose_app({**app_args, "home": str(home), "model_store": str(settings.model_store_dir())}, options)
        serve.run(app, name=APP_NAME, route_prefix="/")
        yield RunningService(f"http://127.0.0.1:{port}", home, settings.account_map()["default"])
    finally:
        serve.shutdown()
        ray.shutdown()
