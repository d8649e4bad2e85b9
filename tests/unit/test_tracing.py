"""Traces without Ray: the real ingress and deployment classes in one process, spans caught by
the SDK's in-memory exporter; the JSONL file and ``wxassist trace`` over it; log lines
stamped with trace ids; the exporter choice from the standard variables."""

from __future__ import annotations

import json
import logging
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from functions.common.clock import SystemClock
from functions.common.ledger import ClaimLedger
from functions.common.outbox import OutboxItem
from functions.common.records import InboundMessage
from functions.common.state import SQLiteStateStore
from functions.emulator.platform import text_message_xml
from functions.push.core import PushAttempt
from functions.push.deployment import observe_attempt
from observability import tracing
from observability.logs import TraceIds
from observability.span_files import message_spans, render_tree
from functions.cli.main import main
from functions.generate.deployment import GenerateServer
from tests.fakes import SleepyEngine
from tests.polling import wait_for
from tests.unit.ingress_stack import make_client, post

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider, exporter)
    yield exporter
    tracing.use_provider(None)


def question(msg_id: str, content: str = "退货政策是什么") -> str:
    return text_message_xml(to_user="gh", from_user="o-secret-openid", content=content, msg_id=msg_id,
                            create_time=int(time.time()))


def answered(home, msg_id: str) -> bool:
    """The message's job has recorded its answer: WeChat's retry now gets it at once."""
    ledger = ClaimLedger(SQLiteStateStore(home / "state.db"), SystemClock(), ttl_s=3600, job_lease_s=60)
    entry = ledger.lookup(InboundMessage("default", "gh", "o-secret-openid", 0, "text", msg_id=msg_id).dedupe_key)
    return entry is not None and entry.state == "done"


def by_name(records):
    named: dict[str, list[dict]] = {}
    for record in records:
        named.setdefault(record["name"], []).append(record)
    return named


def test_the_first_deliverys_trace_rides_in_its_claim_ledger_entry(home, spans):
    """Retries link to the first delivery's trace through the claim ledger entry."""
    from functions.common.ledger import KEY_PREFIX, LedgerEntry
    from functions.common.state import SQLiteStateStore

    client = make_client(home)
    post(client, home, question("505"))
    store = SQLiteStateStore(home / "state.db")
    (entry,) = [LedgerEntry.from_json(raw) for raw in store.scan(KEY_PREFIX).values()]
    wait_for(lambda: "ingress" in {s.name for s in spans.get_finished_spans()})
    (ingress,) = [s for s in spans.get_finished_spans() if s.name == "ingress"]
    assert entry.trace.split("-")[1] == f"{ingress.context.trace_id:032x}"


def test_one_message_is_one_trace_with_a_span_per_step_in_the_right_places(home, spans):
    client = make_client(home)
    post(client, home, question("501"))
    wait_for(lambda: "answer" in {s.name for s in spans.get_finished_spans()})
    records = tracing.finished_spans()
    assert len({record["trace_id"] for record in records}) == 1
    named = by_name(records)
    ingress, answer = named["ingress"][0], named["answer"][0]
    assert ingress["parent_id"] is None
    assert named["decrypt"][0]["parent_id"] == ingress["span_id"]
    assert answer["parent_id"] == ingress["span_id"]  # the job belongs to the delivery that claimed it
    for step in ("intent", "generate", "encrypt"):
        assert named[step][0]["parent_id"] == answer["span_id"], step
    assert ingress["attributes"]["wechat.msg_id"] == "501"
    assert ingress["attributes"]["wxassist.outcome"] == "passive"
    assert answer["attributes"]["wxassist.route"] == "knowledge"
    generate = named["generate"][0]["attributes"]
    assert generate["gen_ai.usage.output_tokens"] > 0 and "wxassist.queue_wait_ms" in generate
    assert generate["wxassist.truncated"] is False


def test_the_ingress_continues_an_incoming_traceparent(home, spans):
    from functions.common.clock import SystemClock
    from functions.emulator.platform import PlatformSimulator
    from functions.common.settings import Settings

    client = make_client(home)
    callback = PlatformSimulator(Settings(home=home).account_map()["default"], SystemClock()).callback(question("502"))
    response = client.post("/wechat/default", params=callback.query, content=callback.body,
                           headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    ingress = by_name(tracing.finished_spans())["ingress"][0]
    assert ingress["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert ingress["parent_id"] == "b7ad6b7169203331"


def slow_client(home):
    """Deliveries wait 0.3 s and the answer takes 0.8 s: the first delivery goes unanswered
    and WeChat retries, as it does when the model is slower than its 5 s window."""
    overrides = {"home": str(home), "delivery_window_s": 0.3}
    generate = GenerateServer(engine_cls=SleepyEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"},
                              settings_overrides=overrides)
    return make_client(home, generate=generate, overrides=overrides)


def test_a_retried_delivery_starts_its_own_trace_linked_to_the_first(home, spans):
    client = slow_client(home)
    first = post(client, home, question("503", "退货政策是什么#0.8"))[0]
    wait_for(lambda: answered(home, "503"))
    again = post(client, home, question("503", "退货政策是什么#0.8"))[0]
    assert first.status_code == 503 and again.status_code == 200
    ingress_spans = by_name(tracing.finished_spans())["ingress"]
    assert len(ingress_spans) == 2
    original, retry = ingress_spans
    assert retry["trace_id"] != original["trace_id"]
    assert retry["links"] == [{"trace_id": original["trace_id"], "span_id": original["span_id"]}]
    assert retry["attributes"]["wxassist.retry_of"] == original["trace_id"]
    assert len(by_name(tracing.finished_spans())["answer"]) == 1  # one job, however many deliveries


def test_a_rejected_callback_records_the_error_type_only(home, spans):
    client = make_client(home)
    response = client.post("/wechat/default", params={"signature": "0" * 40, "timestamp": str(int(time.time())),
                                                      "nonce": "1", "msg_signature": "0" * 40, "encrypt_type": "aes"},
                           content=b"<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>")
    assert 400 <= response.status_code < 500
    named = by_name(tracing.finished_spans())
    assert named["ingress"][0]["attributes"]["wxassist.outcome"] == "rejected"
    assert named["decrypt"][0]["attributes"]["error.type"] == named["ingress"][0]["attributes"]["error.type"]


def test_a_push_attempt_joins_the_trace_its_item_carries(spans):
    item = OutboxItem("job:1", "default", "o-secret-openid", "答案", time.time(), trace=TRACEPARENT)
    observe_attempt(PushAttempt(item, "retried", "45009", 0.05))
    push = by_name(tracing.finished_spans())["push"][0]
    assert push["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and push["parent_id"] == "b7ad6b7169203331"
    assert push["attributes"]["wechat.errcode"] == "45009"
    assert push["attributes"]["error.type"] == "push_retried"
    assert 45 <= push["duration_ms"] <= 60
    assert "o-secret-openid" not in json.dumps(push) and "答案" not in json.dumps(push, ensure_ascii=False)


def test_spans_written_to_jsonl_give_the_tree_and_json_of_wxassist_trace(home, spans, tmp_path, capsys):
    client = slow_client(home)
    post(client, home, question("504", "退货政策是什么#0.8"))
    wait_for(lambda: answered(home, "504"))
    post(client, home, question("504", "退货政策是什么#0.8"))  # WeChat's retry: a second, linked trace
    wait_for(lambda: len([s for s in spans.get_finished_spans() if s.name == "ingress"]) == 2)
    tracing.JsonlSpanExporter(tmp_path, "ingress").export(spans.get_finished_spans())
    chosen = message_spans(tmp_path, "504")
    assert {span["name"] for span in chosen} >= {"ingress", "decrypt", "answer", "intent", "generate", "encrypt"}
    tree = render_tree(chosen)
    assert sum(line.startswith("trace ") for line in tree.splitlines()) == 2 and "a retry: linked to trace" in tree
    assert tree.index("ingress") < tree.index("decrypt")

    assert main(["trace", "504", "--dir", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["spans"]
    assert {"name", "span_id", "parent_id", "start", "duration_ms", "attributes"} <= set(printed[0])
    assert len(printed) == len(chosen)
    assert main(["trace", "no-such-message", "--dir", str(tmp_path)]) == 1


def test_log_records_carry_the_current_trace_and_span_ids(spans):
    record = logging.LogRecord("wxassist", logging.INFO, __file__, 1, "x", (), None)
    TraceIds().filter(record)
    assert record.trace_id == "-"
    with tracing.tracer().start_as_current_span("ingress") as span:
        TraceIds().filter(record)
    context = span.get_span_context()
    assert (record.trace_id, record.span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


@pytest.mark.parametrize(("requested", "environ", "chosen"), [
    ("auto", {}, "file"),
    ("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ("auto", {"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ("file", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "file"),
    ("memory", {"OTEL_SDK_DISABLED": "true"}, "none"),
])
def test_the_exporter_follows_the_setting_then_the_standard_variables(requested, environ, chosen):
    assert tracing.exporter_choice(requested, environ) == chosen


def test_a_full_span_file_rolls_over_so_the_disk_use_stays_bounded(home, spans, tmp_path):
    client = make_client(home)
    post(client, home, question("506"))
    directory = tmp_path / "spans"
    exporter = tracing.JsonlSpanExporter(directory, "ingress", max_bytes=2000)
    for _ in range(5):
        exporter.export(spans.get_finished_spans())
    files = sorted(path.name for path in directory.iterdir())
    assert len(files) <= 2 and all(name.startswith("ingress-") for name in files)
    assert message_spans(directory, "506")  # the rolled file is still read


def test_an_exception_escaping_a_traced_step_is_recorded_by_its_type_only(spans):
    @tracing.traced("generate")
    def fail(**_kwargs):
        raise ValueError("用户说：我的手机号是13800000000")

    with tracing.tracer().start_as_current_span("answer"):
        with pytest.raises(ValueError):
            fail(_trace=tracing.inject())
    failed = [span for span in spans.get_finished_spans() if span.name == "generate"][0]
    assert failed.attributes["error.type"] == "ValueError"
    assert not failed.events  # the SDK would add the message and the stack as an event
    assert "13800000000" not in (failed.status.description or "")


def test_json_log_lines_carry_an_events_fields_as_fields(monkeypatch, capsys):
    from observability.logs import configure_logging, log_event

    monkeypatch.setenv("WXA_LOG_JSON", "1")
    configure_logging("INFO")
    try:
        log_event("delivered", account="default", outcome="passive")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["event"] == "delivered" and line["outcome"] == "passive" and "message" not in line
        assert line["trace_id"] == "-"
    finally:
        monkeypatch.delenv("WXA_LOG_JSON")
        configure_logging("INFO")  # back to text lines for the tests after this one
