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

from functions.common.ledger import dedupe_digest
from functions.common.outbox import DEAD_QUEUE, PENDING_QUEUE
from functions.common.records import InboundMessage
from functions.common.state import StateStore
from observability import metrics
from observability.logs import hashed_user
from observability.tracing import current_traceparent, extract, in_span, link_to, set_attributes, start_span

TRACE_KEY_PREFIX = "wxa:trace:"

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
    def __init__(self, store: StateStore, *, trace_ttl_s: float):
        self._store = store
        self._trace_ttl_s = trace_ttl_s
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

    def needs_link(self, deliveries: int, passive_reply: bool) -> bool:
        """Whether this delivery touches the trace index: a first delivery that WeChat will
        retry (no passive reply) records its trace, and every retry links to it. A first
        delivery answered in time, the common case, costs no store round trip."""
        return in_span() and (deliveries > 1 or not passive_reply)

    def link_deliveries(self, message: InboundMessage, deliveries: int) -> None:
        """In a thread (it touches the store): the first trace of a message is kept; a
        retry's span links to it."""
        key = TRACE_KEY_PREFIX + dedupe_digest(message.dedupe_key)
        own = current_traceparent()
        if self._store.set_if_absent(key, own, self._trace_ttl_s) or deliveries == 1:
            return
        first = self._store.get(key)
        if first and first.split("-")[1:2] != own.split("-")[1:2]:  # another trace: a retry
            link = link_to(first)
            if link is not None:
                span = trace.get_current_span()
                span.add_link(link.context, {"wxassist.link": "first_delivery"})
                span.set_attribute("wxassist.retry_of", f"{link.context.trace_id:032x}")

    @_never_raises
    def delivered(self, outcome_kind: str, deliveries: int, passive_reply: bool) -> None:
        metrics.DELIVERIES.labels(outcome_kind).inc()
        if passive_reply:
            metrics.REPLIES.labels("passive").inc()
        set_attributes(**{"wxassist.outcome": outcome_kind, "wxassist.deliveries": deliveries,
                          "wxassist.delivery": "passive" if passive_reply else outcome_kind})

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
        if deadline_s is not None and time.time() > deadline_s:
            metrics.DEADLINE_MISSES.inc()
        if route == "knowledge":
            metrics.KNOWLEDGE_ANSWERS.labels(str(details.get("grounding", "none"))).inc()
        set_attributes(**{"wxassist.route": route, "wxassist.outcome": outcome,
                          "wxassist.grounding": details.get("grounding"),
                          "wxassist.faq_hit": details.get("grounding") == "faq",
                          "wxassist.cache_hit": details.get("grounding") == "cache",
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
