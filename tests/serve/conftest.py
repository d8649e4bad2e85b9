"""One real Ray Serve instance for the whole session (Ray takes ~15 s to start on 2 cores):
the full application from deploy/local.yaml, the converted demo model, the sample corpus in
a fresh Milvus Lite directory, development credentials in a temporary home.

Ray runs as a cluster of one on-demand head node (``ray.cluster_utils.Cluster``), so a test
can add a spot node beside it, drain it as a preemption notice does, and remove it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from functions.emulator.emulator import WeChatEmulator, emulator_app
from functions.emulator.platform_api import BackgroundServer
from functions.common.settings import AccountConfig, Settings, ensure_dev_credentials
from knowledge import SAMPLE_CORPUS_DIR
from tests.net import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningService:
    base_url: str
    home: Path
    account: AccountConfig
    emulator_url: str
    emulator: object  # functions.emulator.emulator.WeChatEmulator: what users received


# Never used to reach a store here: every replica of the sleepy application loads them with
# its settings, and tests/serve/test_observability.py checks no log or span shows them.
SLEEPY_S3_KEYS = {"s3_access_key": "AKIASLEEPYSCAN0001", "s3_secret_key": "s3SECRETsleepyScan42"}
ON_DEMAND = {"ray.io/market-type": "on-demand"}  # the labels deploy/*.yaml select on
SPOT = {"ray.io/market-type": "spot"}


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's Ray: one head node, on-demand. PYTHONPATH lets replicas import the test
    fakes injected into applications. Logical CPUs: several applications share this instance,
    and the fakes need no real CPU."""
    import os

    import ray
    from ray.cluster_utils import Cluster

    # Replicas at normal priority, as `wxassist up` runs them: at Ray's nice 15 they lose the
    # cores to this test process's own load generator.
    os.environ.setdefault("RAY_worker_niceness", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "labels": ON_DEMAND,
                                                            "include_dashboard": False})
    ray.init(address=cluster.address, logging_level="WARNING", runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def service(ray_cluster, tmp_path_factory) -> RunningService:
    from ray import serve

    from functions.kb.embedding import build_embedder
    from functions.kb.store import KnowledgeBase
    from functions.generate.gguf_import import ensure_demo_model
    from knowledge.ingest import ingest
    from serve_app import APP_NAME, DEFAULT_SERVE_CONFIG, compose_app, read_serve_config

    home = tmp_path_factory.mktemp("wxassist-home")
    ensure_dev_credentials(home)
    settings = Settings(home=home, model_cache=REPO / ".wxassist" / "models")
    ensure_demo_model(settings.model_dir())  # make setup normally did this
    with KnowledgeBase(settings.kb_location(), settings.kb_collection, build_embedder(settings)) as kb:
        ingest(kb, [SAMPLE_CORPUS_DIR])

    _, app_args, options = read_serve_config(DEFAULT_SERVE_CONFIG)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    emulator = WeChatEmulator(settings.account_map(), base_url)
    # Proxies on the head only: nodes a test adds share this machine, and so would the port.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        with BackgroundServer(emulator_app(emulator), free_port()) as platform:
            # Every replica keeps its spans in the SDK's in-memory exporter (tests/serve/test_observability.py).
            # The model's path is under test here (traces, tokens, grounding): its answer mode is
            # "generate". The default, "auto", which quotes at once where the demo model cannot
            # write Chinese, runs in other_company_service and tests/integration. 16 new tokens: on
            # a 2-core CPU without bf16 units the demo model writes about 5 tokens/s in fp32, and
            # 32 or 64 tokens beside this suite's other replicas outlasted WeChat's three deliveries.
            args = {**app_args, "home": str(home), "model_cache": str(settings.model_cache_dir()),
                    "wechat_api_base": platform.url, "trace_exporter": "memory", "wechat_answer_mode": "generate",
                    "max_new_tokens": 16}
            serve.run(compose_app(args, options), name=APP_NAME, route_prefix="/")
            yield RunningService(base_url, home, settings.account_map()["default"], platform.url, emulator)
    finally:
        serve.shutdown()


@pytest.fixture(scope="session")
def sleepy_service(service, tmp_path_factory) -> RunningService:
    """A second application on the same Serve instance: the real pipeline with a generator
    that takes as long as each question says, for WeChat's deadlines."""
    from ray import serve

    from functions.kb.embedding import build_embedder
    from functions.kb.store import KnowledgeBase
    from knowledge.ingest import ingest
    from serve_app import DEFAULT_SERVE_CONFIG, compose_app, read_serve_config
    from tests.fakes import SleepyEngine

    home = tmp_path_factory.mktemp("wxassist-sleepy")
    shutil.copy(service.home / "dev-credentials.json", home / "dev-credentials.json")
    settings = Settings(home=home)
    # A second account, an unverified Official Account: no customer-service API, passive-only.
    # The questions carry "#N" for the generator's pace: the FAQ fast path would answer them
    # without generating, so it is off in this application.
    lite = AccountConfig(name="lite", token="lite-token", aes_key="L" * 43, appid="wxlite0001", strategy="passive-only",
                         faq_fast_path=False, answer_cache=False)
    config = home / "accounts.yaml"
    config.write_text(yaml.safe_dump({"accounts": [{**lite.model_dump(), "token": "lite-token", "aes_key": "L" * 43}],
                                      **SLEEPY_S3_KEYS}))
    with KnowledgeBase(settings.kb_location(), settings.kb_collection, build_embedder(settings)) as kb:
        ingest(kb, [SAMPLE_CORPUS_DIR / "faq.jsonl"])
    _, app_args, options = read_serve_config(DEFAULT_SERVE_CONFIG)
    # Accounts (secrets) reach replicas only through the environment or WXA_CONFIG.
    replica_env = {"runtime_env": {"env_vars": {"WXA_CONFIG": str(config), "PYTHONPATH": str(REPO)}}}
    light = {name: {**opts, "ray_actor_options": {"num_cpus": 0.01, **replica_env}} for name, opts in options.items()}
    light["ingress"]["num_replicas"] = 2  # retries must find the job whichever replica they reach
    base_url = f"{service.base_url}/sleepy"
    emulator = WeChatEmulator({**settings.account_map(), "lite": lite}, base_url)
    with BackgroundServer(emulator_app(emulator), free_port()) as platform:
        # Deliveries are under test here: the classifier's MiniLM embedding per message would
        # only add CPU load to a 2-core machine already running a 200-message burst.
        # Split, while the main application runs local.yaml's fused mode: both topologies
        # carry real traffic in the Serve tests.
        args = {**app_args, "home": str(home), "wechat_api_base": platform.url, "push_poll_s": 0.2,
                "wechat_faq_fast_path": False, "wechat_answer_cache": False, "intent_knn": False,
                # The generator's pace is under test: every question goes to it.
                "answerability": "off", "wechat_answer_mode": "generate",
                "pipeline_mode": "split", "trace_exporter": "file"}  # spans in home/traces, as in production
        app = compose_app(args, light, engine_cls=SleepyEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"})
        serve.run(app, name="sleepy", route_prefix="/sleepy")
        yield RunningService(base_url, home, settings.account_map()["default"], platform.url, emulator)
        serve.delete("sleepy")


def run_sleepy_app(service: RunningService, tmp_path_factory, name: str, generate: dict, *,
                   cpu_steps_actor_options: dict | None = None, app_args: dict | None = None,
                   replicas: dict[str, int] | None = None, corpus: Path = SAMPLE_CORPUS_DIR / "faq.jsonl"):
    """Yield a RunningService for one more application on the shared Serve instance: the
    real pipeline with a generator that takes as long as each question says ("#15": 15 s),
    its own home and emulator, and ``generate`` merged over local.yaml's generate options
    (``ray_actor_options`` key by key); ``cpu_steps_actor_options`` go to every other step,
    ``app_args`` over the application's arguments, ``replicas`` fix steps' replica counts,
    ``corpus`` is what its knowledge base holds."""
    from ray import serve

    from functions.kb.embedding import build_embedder
    from functions.kb.store import KnowledgeBase
    from knowledge.ingest import ingest
    from serve_app import DEFAULT_SERVE_CONFIG, compose_app, read_serve_config
    from tests.fakes import SleepyEngine

    home = tmp_path_factory.mktemp(f"wxassist-{name}")
    shutil.copy(service.home / "dev-credentials.json", home / "dev-credentials.json")
    settings = Settings(home=home)
    with KnowledgeBase(settings.kb_location(), settings.kb_collection, build_embedder(settings)) as kb:
        ingest(kb, [corpus])
    _, local_args, options = read_serve_config(DEFAULT_SERVE_CONFIG)
    light = {}
    for step, opts in options.items():
        actor = {"num_cpus": 0.01, "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}}}
        if step != "generate":
            actor.update(cpu_steps_actor_options or {})
        light[step] = {**opts, "ray_actor_options": actor}
    if "autoscaling_config" in generate:
        light["generate"].pop("num_replicas", None)  # Serve takes one or the other
    actor_options = {**light["generate"]["ray_actor_options"], **generate.get("ray_actor_options", {})}
    light["generate"].update(generate, ray_actor_options=actor_options)
    for step, count in (replicas or {}).items():
        light[step].pop("autoscaling_config", None)
        light[step]["num_replicas"] = count
    base_url = f"{service.base_url}/{name}"
    emulator = WeChatEmulator(settings.account_map(), base_url)
    with BackgroundServer(emulator_app(emulator), free_port()) as platform:
        args = {**local_args, "home": str(home), "wechat_api_base": platform.url, "push_poll_s": 0.2,
                "wechat_faq_fast_path": False, "wechat_answer_cache": False, "intent_knn": False,
                # The generator's pace is under test: every question goes to it.
                "answerability": "off", "wechat_answer_mode": "generate",
                "user_burst": 1000, "account_burst": 1000, **(app_args or {})}
        app = compose_app(args, light, engine_cls=SleepyEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"})
        serve.run(app, name=name, route_prefix=f"/{name}")
        yield RunningService(base_url, home, settings.account_map()["default"], platform.url, emulator)
        serve.delete(name)


def serve_replicas(app: str, deployment: str) -> list[dict]:
    """Serve's view of a deployment's replicas: state, node and actor name of each (the
    controller's details, as `serve status` shows them on a cluster)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    return details["applications"][app]["deployments"][deployment]["replicas"]


def kill_replica(replica: dict) -> None:
    """The replica's process dies at once, as an OOM kill or a lost node does; Serve notices
    and starts another."""
    import ray

    ray.kill(ray.get_actor(replica["actor_name"], namespace="serve"), no_restart=True)


@pytest.fixture(scope="session")
def crowded_service(service, tmp_path_factory) -> RunningService:
    """A third application whose generate deployment takes 2 requests at once and queues 4
    more (Serve's max_queued_requests): a burst overflows it."""
    yield from run_sleepy_app(service, tmp_path_factory, "crowded", {
        "max_ongoing_requests": CROWDED_GENERATE_ONGOING, "max_queued_requests": CROWDED_GENERATE_QUEUE})


@pytest.fixture(scope="session")
def other_company_service(service, tmp_path_factory) -> RunningService:
    """An application whose knowledge base is another company's (骑迹单车, a bike rental shop,
    tests/fixtures/other_company), with no business facts of its own and the embedded
    defaults for answers: retrieval's verdict, the FAQ fast path, answer mode auto. Its
    generator (which writes Chinese) says a sentence about 青禾家居 whatever it is asked:
    only the grounding guard stands between that and a customer."""
    from tests.conftest import FIXTURES

    yield from run_sleepy_app(service, tmp_path_factory, "othershop", {}, corpus=FIXTURES / "other_company" / "docs",
                              app_args={"answerability": "retrieval", "wechat_answer_mode": "auto",
                                        "wechat_faq_fast_path": True, "intent_knn": True})


CROWDED_GENERATE_ONGOING = 2
CROWDED_GENERATE_QUEUE = 4


# Modules whose tests time the real demo model against WeChat's deliveries.
TIMES_THE_REAL_MODEL = {"test_end_to_end.py", "test_observability.py"}


def pytest_collection_modifyitems(config, items):
    """The Serve tests that time the real model run before the others: on a 2-core CPU the
    applications the other modules leave deployed (session fixtures) and their replicas share
    the cores, and the demo model then misses WeChat's deliveries for reasons no deployment has.
    Only the order of the Serve tests among themselves changes."""
    here = Path(__file__).resolve().parent
    slots = [index for index, item in enumerate(items) if Path(str(item.fspath)).resolve().parent == here]
    serve_items = sorted((items[index] for index in slots),
                         key=lambda item: Path(str(item.fspath)).name not in TIMES_THE_REAL_MODEL)
    for index, item in zip(slots, serve_items):
        items[index] = item
