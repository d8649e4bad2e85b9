"""What the ingress records about each message: its spans, the retry links, the metrics.

The ingress opens a message's trace: one ``ingress`` span per WeChat delivery (continuing an
incoming ``traceparent``), and under the delivery that claimed the message an ``answer``
span for its one job, whose calls to the replicas carry the trace on. WeChat's retries of
the same message are deliveries too: each starts a trace of its own, linked to the
message's first trace (the first traceparent is kept in the state store for that).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from functions.common.clock import Clock
from functions.common.outbox import DEAD_QUEUE, PENDING_QUEUE
from functions.common.records import InboundMessage, Outcome
from functions.common.state import StateStore
from observability import metrics
from observability.logs import hashed_user
from observability.tracing import current_traceparent, extract, link_to, set_attributes, start_span


log = logging.getLogger("wxassist.telemetry")


def _never_raises(record):
    """Telemetry sits on the message path: a failure is logged, never raised into delivery."""

    @functools.wraps(record)
    def guarded(*args, **kwargs):
        try:
            return record(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            log.error("telemetry %s failed: %s", record.__name__, type(exc).__name__)
            return None

    return guarded


class MessageTelemetry:
    def __init__(self, store: StateStore, clock: Clock):
        self._store = store  # the outbox backlog and every process's metric snapshots
        self._clock = clock  # the one deadlines are set on (DeliveryPolicy)
        self.source = metrics.process_source("ingress")

    @contextmanager
    def delivery_span(self, account: str, headers: Mapping[str, str]) -> Iterator[Any]:
        """One WeChat delivery: continues the caller's ``traceparent`` when there is one."""
        with start_span("ingress", context=extract(headers), kind=SpanKind.SERVER,
                        attributes={"wxassist.account": account}) as span:
            yield span

    @_never_raises
    def opened(self, message: InboundMessage) -> None:
        """After decrypt: who and which message (hashed user, no content)."""
        set_attributes(**{"wechat.msg_id": message_id(message), "wechat.msg_type": message.msg_type,
                          "wxassist.user": hashed_user(message.from_user)})

    @_never_raises
    def link_to_first(self, first_trace: str) -> None:
        """A retry's span links to the first delivery's trace (kept in the claim ledger, so
        linking costs no store call of its own)."""
        own = current_traceparent()
        if not first_trace or not own or first_trace.split("-")[1:2] == own.split("-")[1:2]:
            return
        link = link_to(first_trace)
        if link is not None:
            span = trace.get_current_span()
            span.add_link(link.context, {"wxassist.link": "first_delivery"})
            span.set_attribute("wxassist.retry_of", f"{link.context.trace_id:032x}")

    @_never_raises
    def delivered(self, outcome: Outcome) -> None:
        metrics.DELIVERIES.labels(outcome.kind).inc()
        if outcome.passive_reply:
            metrics.REPLIES.labels("passive").inc()
        set_attributes(**{"wxassist.outcome": outcome.kind, "wxassist.deliveries": outcome.deliveries})
        self.link_to_first(outcome.first_trace)

    @_never_raises
    def rejected(self, reason: str) -> None:
        metrics.DELIVERIES.labels("rejected").inc()
        set_attributes(**{"error.type": reason, "wxassist.outcome": "rejected"})

    @contextmanager
    def answer_span(self, message: InboundMessage) -> Iterator[Any]:
        with start_span("answer", attributes={
                "wxassist.account": message.account, "wechat.msg_id": message_id(message),
                "wxassist.user": hashed_user(message.from_user)}) as span:
            yield span

    @_never_raises
    def answered(self, details: Mapping[str, Any], started_s: float, deadline_s: float | None) -> None:
        """The job's outcome on its span and in the metrics. ``details`` is what the log line
        says (route, grounding, tokens, …): no text."""
        route = str(details.get("route", "error"))
        outcome = "error" if "error" in details else "deferred" if details.get("deferred") else "ok"
        metrics.MESSAGES.labels(route, outcome).inc()
        metrics.ANSWER_SECONDS.observe(time.monotonic() - started_s)
        if deadline_s is not None and self._clock.now_s() > deadline_s:
            metrics.DEADLINE_MISSES.inc()
        if route == "knowledge":
            metrics.KNOWLEDGE_ANSWERS.labels(str(details.get("grounding", "none"))).inc()
        if details.get("answer_source"):
            metrics.ANSWERS.labels(str(details["answer_source"])).inc()
        set_attributes(**{"wxassist.route": route, "wxassist.outcome": outcome,
                          "wxassist.grounding": details.get("grounding"),
                          "wxassist.answer_source": details.get("answer_source"),
                          "wxassist.passages": details.get("passages"),
                          "wxassist.intent": details.get("intent"),
                          "gen_ai.usage.input_tokens": details.get("tokens_in"),
                          "gen_ai.usage.output_tokens": details.get("tokens_out"),
                          "wxassist.truncated": details.get("truncated"),
                          "wxassist.deferred": details.get("deferred"),
                          "error.type": details.get("error")})

    def exposition(self) -> bytes:
        """``/metrics``: scrape-time gauges first (outbox backlog), then every process's."""

        def refresh() -> None:
            metrics.OUTBOX_BACKLOG.labels("pending").set(self._store.queue_size(PENDING_QUEUE))
            metrics.OUTBOX_BACKLOG.labels("dead").set(self._store.queue_size(DEAD_QUEUE))

        return metrics.exposition(self._store, self.source, refresh)


def message_id(message: InboundMessage) -> str:
    """The MsgId; events carry none, so their CreateTime stands for one (``wxassist trace``
    takes ``event:<CreateTime>``)."""
    return message.msg_id or f"event:{message.create_time}"
