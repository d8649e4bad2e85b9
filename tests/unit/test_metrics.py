"""``/metrics``: Prometheus text that prometheus_client's own parser reads, moving as messages
flow, with other processes' published snapshots merged in under a ``process`` label."""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from functions.emulator.platform import text_message_xml
from functions.common.settings import Settings
from functions.common.clock import FixedClock
from functions.common.state import SQLiteStateStore
from observability import metrics
from tests.fakes import GatedEngine
from tests.unit.ingress_stack import make_client, post


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(parsed, name: str, **labels) -> float:
    """Summed over the labels not named (processes, other routes)."""
    return sum(v for (n, sample_labels), v in parsed.items()
               if n == name and all((k, str(val)) in sample_labels for k, val in labels.items()))


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_metrics_parse_and_move_as_messages_flow(home):
    client = make_client(home)
    before = scrape(client)
    for msg_id in ("601", "602"):
        post(client, home, text_message_xml(to_user="gh", from_user=f"o-{msg_id}", content="退货政策是什么",
                                            msg_id=msg_id, create_time=int(time.time())))
    after = scrape(client)
    grew = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert grew("wxassist_messages_total", route="knowledge", outcome="ok") == 2
    assert grew("wxassist_replies_total", mode="passive") == 2
    assert grew("wxassist_deliveries_total", outcome="passive") == 2
    assert grew("wxassist_answer_seconds_count") == 2
    assert grew("wxassist_knowledge_answers_total", source="generated") == 2
    assert grew("wxassist_generate_tokens_total", direction="out") > 0  # the in-process generate counts here
    assert value(after, "wxassist_outbox_backlog", queue="pending") == 0


def test_other_processes_snapshots_are_merged_under_their_process_label(tmp_path):
    clock = FixedClock(1_000_000.0)
    store = SQLiteStateStore(tmp_path / "state.db", clock)
    other = metrics.CollectorRegistry()
    metrics.Counter("wxassist_pushes", "x", ["outcome"], registry=other).labels("sent").inc(3)
    store.set(metrics.SNAPSHOT_PREFIX + "push:node-b:42", metrics.generate_latest(other).decode(), ttl_s=30)
    store.set(metrics.SNAPSHOT_PREFIX + "push:node-c:7", metrics.generate_latest(other).decode(), ttl_s=10)
    clock.advance(11)  # node-c's replica died: its snapshot expired with it (node-b's lives on)
    text = metrics.exposition(store, "ingress:node-a:1").decode()
    parsed = samples(text)
    pushed = {labels: v for (name, labels), v in parsed.items() if name == "wxassist_pushes_total"}
    assert pushed[(("outcome", "sent"), ("process", "push:node-b:42"))] == 3
    assert not any(dict(labels)["process"] == "push:node-c:7" for labels in pushed)
    # This process's own series are there too, under its own label, once.
    own = [(sample.name, tuple(sorted(sample.labels.items())))
           for family in text_string_to_metric_families(text) for sample in family.samples
           if sample.labels.get("process") == "ingress:node-a:1"]
    assert own and len(own) == len(set(own))  # not also merged back from its own published snapshot


def test_a_publisher_outside_a_serve_replica_is_none(home):
    assert metrics.replica_publisher("generate", Settings(home=home)) is None


async def until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_a_generate_request_cancelled_in_the_queue_leaves_the_queue_count(home):
    """The queue gauge drives an alert: a cancelled waiter must not stay counted, nor run."""
    from functions.generate.deployment import GenerateServer

    gate = threading.Event()
    server = GenerateServer(engine_cls=GatedEngine, engine_kwargs={"answer": "好的。", "gate": gate},
                            settings_overrides={"home": str(home), "generate_batch": 1})

    async def run() -> None:
        first = asyncio.create_task(server.answer("慢", []))
        await until(lambda: metrics.GENERATE_BATCH._value.get() == 1)  # at the engine, held by the gate
        queued = asyncio.create_task(server.answer("排队", []))
        await until(lambda: metrics.GENERATE_QUEUE._value.get() == 1)
        queued.cancel()
        gate.set()
        await first
        # The pool has one thread, which takes work in order: this runs after the abandoned call.
        await asyncio.get_running_loop().run_in_executor(server._pool, lambda: None)

    try:
        asyncio.run(run())
        assert metrics.GENERATE_QUEUE._value.get() == 0 and metrics.GENERATE_BATCH._value.get() == 0
        assert server.stats()["answers"] == 2
        assert len(server._core.engine.calls) == 1  # the cancelled one never reached the engine
    finally:
        gate.set()
        server.close()
