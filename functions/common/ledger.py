"""The claim ledger: one job per WeChat message, however many deliveries and replicas.

WeChat delivers a message up to three times with the same MsgId (events: the same
FromUserName + CreateTime). The first delivery to claim the message's key does the work; a
retry landing on any replica finds the claim and waits for that job instead of starting a
second one, and a retry after the job finished gets the stored reply again. A claim carries a
lease: if its owner dies mid-job, a later delivery takes the job over once the lease lapses.

Keys hold a hash of the user id, not the id itself: the store is shared infrastructure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Literal

from functions.common.clock import Clock
from functions.common.records import Reply
from functions.common.state import StateStore

KEY_PREFIX = "wxa:ledger:"


@dataclass(frozen=True)
class LedgerEntry:
    job_id: str
    state: Literal["in_flight", "done"]
    lease_until_s: float
    reply_body: str = ""
    content_type: str = "application/xml"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> LedgerEntry:
        return cls(**json.loads(raw))

    def reply(self) -> Reply:
        return Reply(self.reply_body, content_type=self.content_type)


@dataclass(frozen=True)
class Claim:
    won: bool  # the caller owns the job and must complete it
    entry: LedgerEntry


def ledger_key(dedupe_key: tuple[str, str, str]) -> str:
    account, user, message = dedupe_key
    digest = hashlib.sha256(f"{user}\0{message}".encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}{account}:{digest}"


class ClaimLedger:
    def __init__(self, store: StateStore, clock: Clock, *, ttl_s: float, job_lease_s: float):
        self._store = store
        self._clock = clock
        self._ttl_s = ttl_s
        self._job_lease_s = job_lease_s

    def claim(self, dedupe_key: tuple[str, str, str], job_id: str) -> Claim:
        key = ledger_key(dedupe_key)
        mine = LedgerEntry(job_id, "in_flight", self._clock.now_s() + self._job_lease_s)
        for _ in range(3):  # the entry can expire between our two reads; try again then
            if self._store.set_if_absent(key, mine.to_json(), self._ttl_s):
                return Claim(True, mine)
            raw = self._store.get(key)
            if raw is None:
                continue
            current = LedgerEntry.from_json(raw)
            lapsed = current.state == "in_flight" and current.lease_until_s < self._clock.now_s()
            if lapsed and self._store.compare_and_set(key, raw, mine.to_json(), self._ttl_s):
                return Claim(True, mine)  # its owner died: the job is ours now
            return Claim(False, current)
        return Claim(True, mine)  # the store keeps dropping the key: answering beats losing

    def complete(self, dedupe_key: tuple[str, str, str], job_id: str, reply: Reply) -> bool:
        """Store the reply for retries. False if the job was taken over meanwhile."""
        key = ledger_key(dedupe_key)
        raw = self._store.get(key)
        if raw is None:
            done = LedgerEntry(job_id, "done", 0.0, reply.body, reply.content_type)
            return self._store.set_if_absent(key, done.to_json(), self._ttl_s)
        current = LedgerEntry.from_json(raw)
        if current.job_id != job_id:
            return False
        done = replace(current, state="done", reply_body=reply.body, content_type=reply.content_type)
        return self._store.compare_and_set(key, raw, done.to_json(), self._ttl_s)

    def lookup(self, dedupe_key: tuple[str, str, str]) -> LedgerEntry | None:
        raw = self._store.get(ledger_key(dedupe_key))
        return None if raw is None else LedgerEntry.from_json(raw)
