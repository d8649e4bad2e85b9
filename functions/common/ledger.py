"""The claim ledger: one job per WeChat message, however many deliveries and replicas.

WeChat delivers a message up to three times with the same MsgId (events: the same
FromUserName + CreateTime). The first delivery to claim the message's key does the work; a
retry landing on any replica finds the claim and waits for that job instead of starting a
second one, and a retry after the job finished gets the stored reply again. A claim carries a
lease, which its owner renews while the job runs: if the owner dies mid-job (its replica
killed, its node gone), the lease lapses within seconds and WeChat's next delivery takes the
job over.

Keys hold a hash of the user id, not the id itself: the store is shared infrastructure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

from functions.common.clock import Clock
from functions.common.records import Reply
from functions.common.state import StateStore

KEY_PREFIX = "wxa:ledger:"
CAS_ATTEMPTS = 20  # each lost compare-and-set means another delivery just updated the entry


@dataclass(frozen=True)
class LedgerEntry:
    job_id: str
    # in_flight: being answered; done: the passive reply is stored; pushed: the answer went
    # to the outbox because the last delivery could not wait for it.
    state: Literal["in_flight", "done", "pushed"]
    lease_until_s: float
    reply_body: str = ""
    content_type: str = "application/xml"
    first_seen_s: float = 0.0  # when the first delivery arrived: WeChat's clock for this message
    deliveries: int = 1
    handoff: bool = False  # the last delivery answered "success": the job must push its answer
    served: bool = False  # a delivery returned the passive reply to a still-connected client
    # Which deliveries returned it: one whose client turns out to have hung up takes back only
    # its own serving, so an overlapping delivery that did get through still counts.
    served_by: tuple[str, ...] = ()
    trace: str = ""  # the first delivery's traceparent: retries link their traces to it
    parts: tuple[str, ...] = ()  # the answer's text, so a job whose owner died can still be pushed
    # What of the answer has been handed to the overflow, so a job recovered after its owner
    # died queues what is missing and nothing twice: the parts after the first, and all of it.
    later_held: bool = False
    overflow_done: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> LedgerEntry:
        """Fields this version does not know are dropped: a replica one release behind (a
        rollback) still reads entries a newer one wrote."""
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in json.loads(raw).items() if key in known}
        return cls(**{**values, "parts": tuple(values.get("parts", ())), "served_by": tuple(values.get("served_by", ()))})

    def reply(self) -> Reply:
        return Reply(self.reply_body, content_type=self.content_type)


@dataclass(frozen=True)
class Claim:
    won: bool  # the caller owns the job and must complete it
    entry: LedgerEntry


def dedupe_digest(dedupe_key: tuple[str, str, str]) -> str:
    """A message's identity without its user's openid: for store keys and job ids."""
    account, user, message = dedupe_key
    digest = hashlib.sha256(f"{user}\0{message}".encode()).hexdigest()[:32]
    return f"{account}:{digest}"


def ledger_key(dedupe_key: tuple[str, str, str]) -> str:
    return KEY_PREFIX + dedupe_digest(dedupe_key)


class ClaimLedger:
    def __init__(self, store: StateStore, clock: Clock, *, ttl_s: float, job_lease_s: float):
        self._store = store
        self._clock = clock
        self._ttl_s = ttl_s
        self._job_lease_s = job_lease_s

    def claim(self, dedupe_key: tuple[str, str, str], job_id: str, trace: str = "") -> Claim:
        """Claim the message for a new job, or count this delivery against the existing one.
        ``trace``: this delivery's traceparent, kept if it is the first."""
        key = ledger_key(dedupe_key)
        now_s = self._clock.now_s()
        mine = LedgerEntry(job_id, "in_flight", now_s + self._job_lease_s, first_seen_s=now_s, trace=trace)
        for _ in range(CAS_ATTEMPTS):  # lost races (expiry, a concurrent update) are retried
            if self._store.set_if_absent(key, mine.to_json(), self._ttl_s):
                return Claim(True, mine)
            raw = self._store.get(key)
            if raw is None:
                continue
            current = LedgerEntry.from_json(raw)
            if current.job_id == job_id:  # our own claim went through, and only its answer was lost
                return Claim(True, current)
            counted = replace(current, deliveries=current.deliveries + 1)
            if current.state == "in_flight" and current.lease_until_s < now_s:
                counted = replace(counted, job_id=job_id, lease_until_s=now_s + self._job_lease_s)
                if self._store.compare_and_set(key, raw, counted.to_json(), self._ttl_s):
                    return Claim(True, counted)  # its owner died: the job is ours now
                continue
            if self._store.compare_and_set(key, raw, counted.to_json(), self._ttl_s):
                return Claim(False, counted)
        # The entry kept changing under us: take it over rather than risk nobody answering.
        self._store.set(key, mine.to_json(), self._ttl_s)
        return Claim(True, mine)

    def renew(self, dedupe_key: tuple[str, str, str], job_id: str) -> bool:
        """Extend the job's lease: its owner is alive, from the claim until its answer has
        been served or handed on. False once the job is not ours (taken over, expired)."""
        def extended(entry: LedgerEntry) -> LedgerEntry | None:
            if entry.job_id != job_id:
                return None
            return replace(entry, lease_until_s=self._clock.now_s() + self._job_lease_s)

        entry = self._update(dedupe_key, extended)
        return entry is not None and entry.job_id == job_id

    def take_over(self, dedupe_key: tuple[str, str, str], recovery_id: str) -> LedgerEntry | None:
        """For the journal's recovery: a job whose owner's lease has lapsed, now leased to
        ``recovery_id``; None while the owner is alive or once another recovery took it. Not
        answered yet (in_flight): the job becomes ``recovery_id``'s, to answer. Answered: the
        job id stays, since the outbox items its owner queued are named after it."""
        def taken(entry: LedgerEntry) -> LedgerEntry | None:
            now_s = self._clock.now_s()
            if entry.lease_until_s >= now_s:
                return None
            owner = recovery_id if entry.state == "in_flight" else entry.job_id
            return replace(entry, job_id=owner, lease_until_s=now_s + self._job_lease_s)

        entry, taken_now = self._apply(dedupe_key, taken)
        return entry if taken_now else None

    def mark(self, dedupe_key: tuple[str, str, str], job_id: str, *, later_held: bool = False,
             overflow_done: bool = False) -> None:
        """Record what of the job's answer the overflow now has (flags only ever turn on)."""
        def marked(entry: LedgerEntry) -> LedgerEntry | None:
            if entry.job_id != job_id:
                return None
            return replace(entry, later_held=entry.later_held or later_held or overflow_done,
                           overflow_done=entry.overflow_done or overflow_done)

        self._update(dedupe_key, marked)

    def hand_off(self, dedupe_key: tuple[str, str, str]) -> LedgerEntry | None:
        """Flag the job in flight to push its answer. Returns the entry after the attempt:
        flagged, or already finished (then the caller serves its reply instead)."""
        return self._update(
            dedupe_key, lambda e: replace(e, handoff=True) if e.state == "in_flight" and not e.handoff else None
        )

    def complete(self, dedupe_key: tuple[str, str, str], job_id: str, reply: Reply) -> LedgerEntry | None:
        """Record the finished job. The result says what to do with the answer: ``done`` means
        deliveries will serve it passively; ``pushed`` means the last delivery has gone and
        the caller must push it. None: the job was taken over meanwhile, drop it."""
        key = ledger_key(dedupe_key)
        for _ in range(CAS_ATTEMPTS):
            raw = self._store.get(key)
            if raw is None:  # expired under a very slow job: its deliveries are long gone
                pushed = LedgerEntry(job_id, "pushed", self._clock.now_s() + self._job_lease_s, handoff=True,
                                     parts=tuple(reply.parts))
                return pushed if self._store.set_if_absent(key, pushed.to_json(), self._ttl_s) else None
            current = LedgerEntry.from_json(raw)
            if current.job_id != job_id:
                return None
            if current.state != "in_flight":  # recorded already, and only the answer to that was lost
                return current
            current = replace(current, parts=tuple(reply.parts))
            finished = (
                replace(current, state="pushed")
                if current.handoff
                else replace(current, state="done", reply_body=reply.body, content_type=reply.content_type)
            )
            if self._store.compare_and_set(key, raw, finished.to_json(), self._ttl_s):
                return finished
        return None

    def mark_served(self, dedupe_key: tuple[str, str, str], delivery_id: str = "") -> LedgerEntry | None:
        """Record that delivery ``delivery_id`` is returning the stored reply. The entry after
        the attempt: ``pushed`` means the job already gave up waiting for a delivery, so return
        success."""
        def served(entry: LedgerEntry) -> LedgerEntry | None:
            if entry.state != "done" or (entry.served and delivery_id in entry.served_by):
                return None
            return replace(entry, served=True, served_by=(*entry.served_by, delivery_id))

        return self._update(dedupe_key, served)

    def unserve(self, dedupe_key: tuple[str, str, str], delivery_id: str) -> LedgerEntry | None:
        """Delivery ``delivery_id`` never got its reply out (WeChat hung up first): take its
        serving back. Unserved by every delivery, the reply goes by the overflow after the
        last window, as if none had carried it."""
        def taken_back(entry: LedgerEntry) -> LedgerEntry | None:
            if delivery_id not in entry.served_by:
                return None
            others = tuple(served for served in entry.served_by if served != delivery_id)
            return replace(entry, served_by=others, served=bool(others))

        return self._update(dedupe_key, taken_back)

    def push_unserved(self, dedupe_key: tuple[str, str, str], job_id: str) -> bool:
        """After the last passive window: if no delivery served the reply, switch it to pushed.
        True only for the call that switched it, so one caller pushes, however many try."""
        _, switched = self._apply(
            dedupe_key,
            lambda e: replace(e, state="pushed") if e.job_id == job_id and e.state == "done" and not e.served else None,
        )
        return switched

    def _update(self, dedupe_key: tuple[str, str, str], change) -> LedgerEntry | None:
        """Apply ``change`` (entry -> new entry, or None for no change); the entry after it."""
        return self._apply(dedupe_key, change)[0]

    def _apply(self, dedupe_key: tuple[str, str, str], change) -> tuple[LedgerEntry | None, bool]:
        """Apply ``change`` by compare-and-set: (the entry after it, whether this call changed it)."""
        key = ledger_key(dedupe_key)
        for _ in range(CAS_ATTEMPTS):
            raw = self._store.get(key)
            if raw is None:
                return None, False
            current = LedgerEntry.from_json(raw)
            updated = change(current)
            if updated is None:
                return current, False
            if self._store.compare_and_set(key, raw, updated.to_json(), self._ttl_s):
                return updated, True
        return self.lookup(dedupe_key), False

    def lookup(self, dedupe_key: tuple[str, str, str]) -> LedgerEntry | None:
        raw = self._store.get(ledger_key(dedupe_key))
        return None if raw is None else LedgerEntry.from_json(raw)

    def lookup_many(self, dedupe_keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], LedgerEntry]:
        """The entries of several messages in one store call (those still there)."""
        keys = {ledger_key(dedupe_key): dedupe_key for dedupe_key in dedupe_keys}
        return {keys[key]: LedgerEntry.from_json(raw) for key, raw in self._store.get_many(list(keys)).items()}
