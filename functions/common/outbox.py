"""The durable outbox: answers waiting to be pushed through the customer-service API.

An item's id is its idempotency key (the job id and the part number), so an answer enqueued
twice is queued once. A worker leases items; one that dies holding a lease lets its items come
due again when the lease lapses. A failed send is retried with exponential backoff; an item
that cannot be delivered (out of the 48-hour window, over quota, or out of attempts) moves to
the dead-letter queue with its reason, where operators can see it: never retried forever,
never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from functions.common.clock import Clock
from functions.common.state import StateStore

PENDING_QUEUE = "wxa:outbox"
DEAD_QUEUE = "wxa:outbox:dead"
NEVER_DUE_S = 1e18  # dead letters are kept, not leased


@dataclass(frozen=True)
class OutboxItem:
    item_id: str  # "{job_id}:{part}", the idempotency key
    account: str
    to_user: str
    text: str
    created_s: float
    attempts: int = 0
    last_error: str = ""
    trace: str = ""  # W3C traceparent of the message's trace: push attempts join it

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> OutboxItem:
        """Fields this version does not know are dropped: a replica one release behind (a
        rollback) still drains items a newer one queued."""
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in json.loads(raw).items() if key in known})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0

    def delay_s(self, attempts: int) -> float:
        """After the n-th failed attempt: base * 2^(n-1), capped."""
        return min(self.base_delay_s * 2 ** max(attempts - 1, 0), self.max_delay_s)


class Outbox:
    def __init__(self, store: StateStore, clock: Clock, *, lease_s: float = 30.0, retry: RetryPolicy = RetryPolicy()):
        self._store = store
        self._clock = clock
        self._lease_s = lease_s
        self._retry = retry

    def put(self, item: OutboxItem) -> bool:
        """Queue an item now; False if one with the same id is already queued."""
        return self._store.enqueue(PENDING_QUEUE, item.item_id, item.to_json(), self._clock.now_s())

    def take(self, limit: int) -> list[OutboxItem]:
        """Lease up to ``limit`` due items; each must end in ``sent``, ``failed`` or ``undeliverable``."""
        leased = self._store.lease(PENDING_QUEUE, self._clock.now_s(), self._lease_s, limit)
        return [OutboxItem.from_json(payload) for _, payload in leased]

    def sent(self, item: OutboxItem) -> None:
        self._store.ack(PENDING_QUEUE, item.item_id)

    def failed(self, item: OutboxItem, error: str) -> bool:
        """A transient failure: retry later with backoff. False once attempts are exhausted,
        when the item has moved to the dead letters instead."""
        attempts = item.attempts + 1
        updated = replace(item, attempts=attempts, last_error=error)
        if attempts >= self._retry.max_attempts:
            self.undeliverable(updated, f"gave up after {attempts} attempts: {error}")
            return False
        self._store.reschedule(PENDING_QUEUE, item.item_id, updated.to_json(), self._clock.now_s() + self._retry.delay_s(attempts))
        return True

    def undeliverable(self, item: OutboxItem, reason: str) -> None:
        dead = replace(item, last_error=reason)
        self._store.enqueue(DEAD_QUEUE, item.item_id, dead.to_json(), NEVER_DUE_S)
        self._store.ack(PENDING_QUEUE, item.item_id)

    def backlog(self) -> int:
        return self._store.queue_size(PENDING_QUEUE)

    def dead_letters(self) -> int:
        return self._store.queue_size(DEAD_QUEUE)
