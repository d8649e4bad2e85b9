"""Observability through the real Serve app: one trace per message across replica processes;
nothing a user wrote, nor any secret, in any exported span or log line of the run; /metrics
merging every replica's counters."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from functions.emulator.emulator import UserMessage
from observability.span_files import message_spans
from tests.serve.conftest import SLEEPY_S3_KEYS
from tests.serve.test_end_to_end import deliver, text

pytestmark = pytest.mark.serve

SECRET_TEXT = "我的订单号是WX-SECRET-88421，退货政策是什么？#18"
SECRET_USER = "o-trace-secret-openid-5521"


def replica_spans(app_name: str) -> list[dict]:
    """Every replica's in-memory spans (one replica per deployment in this app)."""
    from ray import serve

    spans = serve.get_app_handle(app_name).finished_spans.remote().result()
    for name in ("retrieve", "generate", "push"):
        spans += serve.get_deployment_handle(name, app_name=app_name).finished_spans.remote().result()
    return spans


def wait_for_spans(collect, names: set[str], timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = collect()
        if names <= {span["name"] for span in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_one_message_is_one_trace_across_the_replicas_in_memory(service):
    """deploy/local.yaml's fused mode: decrypt, intent and encrypt in the ingress process,
    retrieve and generate in their own; the trace context crosses the handles."""
    result = deliver(service, text("实木家具怎么保养？", "7001", user="o-trace-user"))
    assert result.outcome == "passive", result.statuses

    def this_message() -> list[dict]:
        spans = replica_spans("wxassist")
        traces = {s["trace_id"] for s in spans if s["attributes"].get("wechat.msg_id") == "7001"}
        return [s for s in spans if s["trace_id"] in traces]

    spans = wait_for_spans(this_message, {"ingress", "decrypt", "answer", "intent", "retrieve", "generate", "encrypt"})
    first = min(spans, key=lambda s: s["start"])["trace_id"]
    trace = sorted((s for s in spans if s["trace_id"] == first), key=lambda s: s["start"])
    named: dict[str, dict] = {}
    for span in trace:  # the first of each name: retrieve's later one stores the answer in the cache
        named.setdefault(span["name"], span)
    assert named["retrieve"]["attributes"]["wxassist.method"] == "find"
    assert {"ingress", "decrypt", "answer", "intent", "retrieve", "generate", "encrypt"} <= set(named)
    assert named["ingress"]["parent_id"] is None and named["decrypt"]["parent_id"] == named["ingress"]["span_id"]
    for step in ("intent", "retrieve", "generate", "encrypt"):
        assert named[step]["parent_id"] == named["answer"]["span_id"], step
    assert named["answer"]["parent_id"] == named["ingress"]["span_id"]
    # Different processes: the resource says which function exported each span.
    assert named["retrieve"]["function"] == "retrieve" and named["generate"]["function"] == "generate"
    assert named["ingress"]["function"] == named["decrypt"]["function"] == "ingress"
    assert named["generate"]["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert named["retrieve"]["attributes"]["wxassist.passages"] > 0
    # If the model took longer than one window, WeChat's retries are traces of their own, linked
    # (always so in the pushed-answer test below).
    retries = [s for s in spans if s["trace_id"] != first and s["name"] == "ingress"]
    assert len(retries) == len(result.statuses) - 1
    assert all(retry["links"][0]["trace_id"] == first for retry in retries)


def test_a_pushed_answer_is_one_split_trace_with_its_push_and_leaks_nothing(sleepy_service):
    """deploy/local.yaml in split mode, spans to JSONL files: an answer too slow for every
    window is pushed, and the push attempt is in the message's trace. Then every span file
    and every Ray log line of the session is searched for the message text, the token, the
    AES key and the raw openid."""
    result = asyncio.run(sleepy_service.emulator.send(UserMessage(user=SECRET_USER, text=SECRET_TEXT,
                                                                  wait_for_push_s=45)))
    assert [m["channel"] for m in result["received"]] == ["push"], result
    trace_dir = sleepy_service.home / "traces"

    def this_message() -> list[dict]:
        return message_spans(trace_dir, result["msg_id"])

    # Each process exports every 0.5 s: generate's span may land after push's.
    spans = wait_for_spans(this_message, {"ingress", "decrypt", "answer", "intent", "retrieve", "generate", "encrypt",
                                          "push"})
    first = min(spans, key=lambda s: s["start"])["trace_id"]
    named: dict[str, dict] = {}
    for span in sorted((s for s in spans if s["trace_id"] == first), key=lambda s: s["start"]):
        named.setdefault(span["name"], span)
    assert {"ingress", "decrypt", "answer", "intent", "retrieve", "generate", "encrypt", "push"} <= set(named)
    assert named["push"]["parent_id"] == named["ingress"]["span_id"]  # held under the claiming delivery
    assert named["push"]["attributes"]["wxassist.push_outcome"] == "sent"
    functions = {s["function"] for s in named.values()}
    assert {"ingress", "decrypt", "intent", "retrieve", "generate", "encrypt", "push"} <= functions  # split: 7 processes
    # Pushed means every delivery went unanswered: WeChat's retries are traces of their own,
    # each linked to the first (through the claim ledger entry).
    retries = [s for s in spans if s["trace_id"] != first and s["name"] == "ingress"]
    assert len(retries) == 2 and all(retry["links"][0]["trace_id"] == first for retry in retries), retries

    credentials = json.loads((sleepy_service.home / "dev-credentials.json").read_text())
    secrets = {"message text": "WX-SECRET-88421", "token": credentials["token"],
               "AES key": credentials["aes_key"], "app secret": credentials["secret"], "openid": SECRET_USER,
               "S3 access key": SLEEPY_S3_KEYS["s3_access_key"], "S3 secret key": SLEEPY_S3_KEYS["s3_secret_key"]}
    exported = [path for path in trace_dir.glob("*.jsonl")] + _ray_logs()
    assert len(exported) > 7
    for path in exported:
        content = path.read_text(encoding="utf-8", errors="replace")
        for what, secret in secrets.items():
            assert secret not in content, f"{what} found in {path}"


def _ray_logs() -> list[Path]:
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    return [path for path in logs.rglob("*") if path.is_file() and path.suffix in (".log", ".out", ".err")]


def test_metrics_on_the_ingress_include_every_replicas_snapshot(service):
    """/metrics through Serve: the generate and push replicas' counters arrive by their
    published snapshots, under their own process labels, and parse as Prometheus text."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    deliver(service, text("实木家具怎么保养？", "7002", user="o-metrics-user"))

    def scrape() -> list:
        body = httpx.get(f"{service.base_url}/metrics", timeout=10).text
        return [sample for family in text_string_to_metric_families(body) for sample in family.samples]

    def generate_tokens() -> dict[str, float]:
        return {sample.labels["process"]: sample.value for sample in scrape()
                if sample.name == "wxassist_generate_tokens_total" and sample.labels.get("direction") == "out"}

    deadline = time.monotonic() + 20
    while not any(process.startswith("generate:") and tokens > 0 for process, tokens in generate_tokens().items()):
        assert time.monotonic() < deadline, generate_tokens()
        time.sleep(1)
    processes = {sample.labels["process"].split(":")[0] for sample in scrape()}
    assert {"ingress", "generate", "push"} <= processes
