"""The job journal: every claimed message, kept in the shared store until its answer has been
dealt with (served passively, or handed to the outbox).

The claim ledger says who owns a job and whether the owner is alive (its lease). It does not
say what the job was: when an owner dies after WeChat's last delivery (a slow answer handed
off, then its ingress replica killed), no delivery is left to take the job over, and the
message would be lost. The journal keeps the message itself, as a durable queue item keyed by
the message's ledger key; every ingress replica looks at the items that come due (see
``DeliveryCoordinator.recover_orphans``) and takes over the ones whose owner has died.

An item comes due ``recheck_s`` after it was written or last looked at, so live jobs are
looked at again every ``recheck_s`` and cost one store call each time.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from functions.common.clock import Clock
from functions.common.ledger import dedupe_digest
from functions.common.records import InboundMessage
from functions.common.state import StateStore

JOURNAL_QUEUE = "jobs"


class JobJournal:
    def __init__(self, store: StateStore, clock: Clock, *, recheck_s: float):
        self._store = store
        self._clock = clock
        self._recheck_s = recheck_s

    def open(self, message: InboundMessage) -> None:
        """Keep the message until ``close``; writing it again (a taken-over job) is a no-op."""
        payload = json.dumps(asdict(message), ensure_ascii=False, separators=(",", ":"))
        self._store.enqueue(JOURNAL_QUEUE, dedupe_digest(message.dedupe_key), payload,
                            self._clock.now_s() + self._recheck_s)

    def close(self, message: InboundMessage) -> None:
        self._store.ack(JOURNAL_QUEUE, dedupe_digest(message.dedupe_key))

    def due(self, limit: int) -> list[InboundMessage]:
        """Messages to look at now; each comes due again ``recheck_s`` later unless closed."""
        items = self._store.lease(JOURNAL_QUEUE, self._clock.now_s(), self._recheck_s, limit)
        return [InboundMessage(**json.loads(payload)) for _, payload in items]

    def size(self) -> int:
        return self._store.queue_size(JOURNAL_QUEUE)
