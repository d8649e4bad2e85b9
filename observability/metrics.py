"""Prometheus metrics for every replica, served together on the ingress's ``/metrics``.

Each process counts into a registry of its own. Every few seconds it publishes that
registry's text exposition to the shared state store (``wxa:metrics:<function>:<process>``,
with a time to live, so a dead replica's series disappear). The ingress serves its own live
registry plus every other process's latest snapshot, each series labelled with the process
it came from: one scrape target shows the whole application, on one machine or (with
Redis as the store) on a cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from functions.common.state import StateStore

SNAPSHOT_PREFIX = "wxa:metrics:"
PUBLISH_EVERY_S = 5.0
SNAPSHOT_TTL_S = 30.0
# Around WeChat's 5 s passive window, and the push path's tens of seconds beyond it.
ANSWER_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)

log = logging.getLogger("wxassist.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter("wxassist_messages", "Messages answered, by route and outcome", ["route", "outcome"],
                   registry=REGISTRY)
ANSWER_SECONDS = Histogram("wxassist_answer_seconds", "From a message's arrival to its answer being ready",
                           buckets=ANSWER_BUCKETS_S, registry=REGISTRY)
DEADLINE_MISSES = Counter("wxassist_deadline_misses", "Answers ready after the last passive window closed",
                          registry=REGISTRY)
REPLIES = Counter("wxassist_replies", "Replies that reached the user, by how: passive or pushed",
                  ["mode"], registry=REGISTRY)
DELIVERIES = Counter("wxassist_deliveries", "WeChat's deliveries (retries included), by outcome", ["outcome"],
                     registry=REGISTRY)
ANSWERS = Counter("wxassist_answers", "Answers to questions by how they were made: model, extract (a quote), "
                  "faq, cache, tool, not_found", ["source"], registry=REGISTRY)
KNOWLEDGE_ANSWERS = Counter("wxassist_knowledge_answers",
                            "Knowledge answers by source: faq and cache cost no GPU time", ["source"],
                            registry=REGISTRY)
GENERATE_QUEUE = Gauge("wxassist_generate_queue_depth", "Requests in a generate replica waiting for the engine",
                       registry=REGISTRY)
GENERATE_BATCH = Gauge("wxassist_generate_batch_size", "Requests a generate replica is generating at once",
                       registry=REGISTRY)
GENERATE_TOKENS = Counter("wxassist_generate_tokens", "Tokens in and out of the model (rate: tokens/s)",
                          ["direction"], registry=REGISTRY)
GENERATE_SECONDS = Histogram("wxassist_generate_seconds", "One generation, queue wait included",
                             buckets=ANSWER_BUCKETS_S, registry=REGISTRY)
OUTBOX_REFUSALS = Counter("wxassist_outbox_refusals", "Questions refused because the outbox was full",
                          registry=REGISTRY)
GENERATE_RETRIES = Counter("wxassist_generate_retries", "Answers asked again after their generate replica was lost",
                           registry=REGISTRY)
# Read from the store by the ingress that is scraped, at scrape time: in no snapshot, so an
# ingress replica nobody scrapes cannot keep publishing a stale backlog.
SCRAPE_REGISTRY = CollectorRegistry(auto_describe=True)
OUTBOX_BACKLOG = Gauge("wxassist_outbox_backlog", "Answers waiting in the outbox to be pushed", ["queue"],
                       registry=SCRAPE_REGISTRY)
PUSHES = Counter("wxassist_pushes", "Customer-service push attempts by outcome", ["outcome"], registry=REGISTRY)
WECHAT_API_ERRORS = Counter("wxassist_wechat_api_errors", "WeChat API errors by errcode (network: no answer)",
                            ["code"], registry=REGISTRY)


# WeChat errcodes worth a series of their own; any other code is counted as "other", so a
# misbehaving endpoint cannot mint unbounded label values.
KNOWN_ERRCODES = {"-1", "40001", "40003", "40014", "41001", "42001", "43004", "43019", "45009", "45015", "45047",
                  "48001", "network", "ambiguous"}


def errcode_label(code: str) -> str:
    return code if code in KNOWN_ERRCODES else "other"


def process_source(function: str) -> str:
    return f"{function}:{socket.gethostname()}:{os.getpid()}"


def publish(store: StateStore, source: str) -> None:
    store.set(SNAPSHOT_PREFIX + source, generate_latest(REGISTRY).decode("utf-8"), SNAPSHOT_TTL_S)


class MetricsPublisher:
    """A daemon thread publishing this process's snapshot until stopped; a store outage is
    logged and retried, never raised into the replica."""

    def __init__(self, store: StateStore, function: str, every_s: float = PUBLISH_EVERY_S):
        self.source = process_source(function)
        self._store = store
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wxassist-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                publish(self._store, self.source)
            except Exception as exc:  # noqa: BLE001 - metrics must never take a replica down
                log.warning("metrics snapshot not published: %s", type(exc).__name__)
            if self._stop.wait(self._every_s):
                return

    def stop(self) -> None:
        self._stop.set()


def exposition(store: StateStore, own_source: str, refresh: Callable[[], None] | None = None) -> bytes:
    """Every process's latest snapshot (this one's published first, so it is current),
    merged by metric family under a ``process`` label, plus the scrape-time gauges: the text
    ``/metrics`` serves. Served from the store alike by every ingress replica, so the scrape
    that reaches another replica next never sees a counter go back."""
    families: dict[str, Metric] = {}
    try:
        publish(store, own_source)
        snapshots = store.scan(SNAPSHOT_PREFIX)
    except Exception as exc:  # noqa: BLE001 - the store is down: this process's own metrics still serve
        log.warning("metric snapshots unavailable: %s", type(exc).__name__)
        snapshots = {SNAPSHOT_PREFIX + own_source: generate_latest(REGISTRY).decode("utf-8")}
    for key, text in sorted(snapshots.items()):
        try:
            _merge(families, text, key[len(SNAPSHOT_PREFIX):])
        except Exception as exc:  # noqa: BLE001 - one unreadable snapshot must not empty the page
            log.warning("metric snapshot %s unreadable: %s", key, type(exc).__name__)
    if refresh is not None:
        try:
            refresh()
            _merge(families, generate_latest(SCRAPE_REGISTRY).decode("utf-8"), own_source)
        except Exception as exc:  # noqa: BLE001
            log.warning("scrape-time metrics unavailable: %s", type(exc).__name__)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


def _merge(families: dict[str, Metric], text: str, source: str) -> None:
    for family in text_string_to_metric_families(text):
        merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
        for sample in family.samples:
            merged.add_sample(sample.name, {**sample.labels, "process": source}, sample.value,
                              sample.timestamp, sample.exemplar)


class _Fixed:
    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self):
        return iter(self._families)


def in_serve_replica() -> bool:
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # noqa: BLE001 - outside Serve it raises; without Ray there is no replica
        return False
    return True


def replica_publisher(function: str, settings, store: StateStore | None = None) -> MetricsPublisher | None:
    """A publisher when this process is a Serve replica; None elsewhere (tests, benchmarks,
    the fused ingress's in-process steps), where the calling process serves or ignores them.
    ``store``: the replica's own connection, when it has one."""
    if not in_serve_replica():
        return None
    if store is None:
        from functions.common.state import open_state_store

        store = open_state_store(settings.state_location())
    return MetricsPublisher(store, function)
