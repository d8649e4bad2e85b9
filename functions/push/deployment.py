"""Thin Serve wrapper over ``PushWorker``: a replica drains the outbox in a background loop.
Several replicas may run: leases keep them off each other's items."""

from __future__ import annotations

import logging
import threading
from typing import Any

from functions.common.clock import Clock, SystemClock
from functions.common.outbox import Outbox
from functions.common.settings import load_settings
from functions.common.state import open_state_store
from functions.push.core import CustomerServiceSender, PushAttempt, PushWorker
from functions.push.wechat_api import WeChatSender
from observability import metrics
from observability.logs import hashed_user
from observability.tracing import ReportsSpans, configure_for, tracer
from opentelemetry.trace import Status, StatusCode

logger = logging.getLogger("wxassist.push")


class PushServer(ReportsSpans):
    def __init__(
        self,
        settings_overrides: dict[str, Any] | None = None,
        clock: Clock | None = None,
        sender: CustomerServiceSender | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("push", settings)
        clock = clock or SystemClock()
        store = open_state_store(settings.state_location(), clock)
        sender = sender or WeChatSender(settings.account_map(), store, settings.wechat_api_base)
        self._worker = PushWorker(Outbox(store, clock, lease_s=settings.push_lease_s), sender, store,
                                  on_attempt=observe_attempt)
        self._publisher = metrics.replica_publisher("push", settings, store)
        self._poll_s = settings.push_poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_forever, name="outbox-drain", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    def _drain_forever(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                while (stats := self._worker.run_once()).total():  # keep going while there is work
                    logger.info("pushed sent=%d retried=%d undeliverable=%d not_resent=%d",
                                stats.sent, stats.retried, stats.undeliverable, stats.not_resent)
            except Exception as exc:  # a store or network outage: try again next tick
                logger.error("outbox drain failed: %s", type(exc).__name__)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        publisher = getattr(self, "_publisher", None)
        if publisher is not None:
            publisher.stop()


def observe_attempt(attempt: PushAttempt) -> None:
    """A span per attempt in the message's own trace (the item carries its traceparent),
    and the push metrics. The span is recorded after the fact: the worker's core stays pure."""
    import time

    from observability.tracing import extract

    metrics.PUSHES.labels(attempt.outcome).inc()
    if attempt.outcome == "sent":
        metrics.REPLIES.labels("pushed").inc()
    if attempt.errcode is not None:
        metrics.WECHAT_API_ERRORS.labels(metrics.errcode_label(attempt.errcode)).inc()
    if not attempt.item.trace:
        return
    ended_ns = time.time_ns()
    span = tracer().start_span("push", context=extract({"traceparent": attempt.item.trace}),
                               start_time=ended_ns - int(attempt.seconds * 1e9))
    span.set_attribute("wxassist.account", attempt.item.account)
    span.set_attribute("wxassist.user", hashed_user(attempt.item.to_user))
    span.set_attribute("wxassist.push_item", attempt.item.item_id)
    span.set_attribute("wxassist.push_attempt", attempt.item.attempts + 1)
    span.set_attribute("wxassist.push_outcome", attempt.outcome)
    span.set_attribute("wxassist.delivery", "pushed")
    if attempt.errcode is not None:
        span.set_attribute("wechat.errcode", attempt.errcode)
    if attempt.outcome != "sent":
        span.set_attribute("error.type", f"push_{attempt.outcome}")
        span.set_status(Status(StatusCode.ERROR, attempt.outcome))
    span.end(end_time=ended_ns)
