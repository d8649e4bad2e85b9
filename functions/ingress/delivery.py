"""WeChat's delivery clock, as decisions. Pure: the ingress asks, the clock is passed in.

WeChat waits about 5 s for each delivery and tries three times, about 5 s apart, so a
message's passive reply can arrive until about 15 s after the first delivery. Every delivery
waits for the answer inside its own window. When the last one cannot wait any longer, it
answers for the job and hands it off. Where the answer then goes, and where the parts a passive
reply cannot carry go, is the account's overflow (``overflow.py``): pushed through the
customer-service API (passive-then-push) or held for the user to fetch with "继续"
(passive-only). The generation budget
is what fits before the last window closes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from functions.common.clock import TimerClock
from functions.common.job_journal import JobJournal
from functions.common.ledger import Claim, ClaimLedger, LedgerEntry
from functions.common.wechat_protocol import DELIVERY_ATTEMPTS, DELIVERY_TIMEOUT_S, REDELIVERY_INTERVAL_S
from functions.common.records import InboundMessage, Outcome, Reply
from functions.ingress.overflow import Blocking, Overflow

logger = logging.getLogger("wxassist.delivery")
RECORD_ATTEMPTS = 8
CLAIM_RESERVE_S = 2.5  # of a delivery's window, kept for answering without the ledger


@dataclass(frozen=True)
class DeliveryPolicy:
    window_s: float = DELIVERY_TIMEOUT_S - 0.5  # how long one delivery waits before WeChat gives up
    deliveries: int = DELIVERY_ATTEMPTS
    redelivery_interval_s: float = REDELIVERY_INTERVAL_S
    tokens_per_s: float = 12.0  # generate's measured speed (2-core CPU demo: ≈12)
    min_new_tokens: int = 16
    overhead_s: float = 1.0  # prompt, retrieval and the hops around generation
    # The last delivery stops this much earlier: a passive reply sent near the end of its
    # window can reach WeChat after it hung up (proxy queues, the network), and no delivery
    # comes after it to try again. An answer ready later goes by the overflow instead.
    last_reply_margin_s: float = 1.0

    def is_last_delivery(self, deliveries_seen: int, first_seen_s: float, now_s: float) -> bool:
        """The last delivery, counted, or by the clock when earlier deliveries never reached us."""
        last_arrival_s = (self.deliveries - 1) * self.redelivery_interval_s
        return deliveries_seen >= self.deliveries or now_s - first_seen_s >= last_arrival_s - 0.5

    def passive_deadline_s(self, first_seen_s: float) -> float:
        return first_seen_s + (self.deliveries - 1) * self.redelivery_interval_s + self.window_s

    def token_budget(self, first_seen_s: float, now_s: float, max_new_tokens: int) -> int:
        """Tokens that still fit before the last passive window closes, within [min, max]."""
        left_s = self.passive_deadline_s(first_seen_s) - now_s - self.overhead_s
        return max(self.min_new_tokens, min(max_new_tokens, int(left_s * self.tokens_per_s)))


# (message, max_new_tokens, deadline_s or None) -> the reply
Answerer = Callable[[InboundMessage, int, float | None], Awaitable[Reply]]


class DeliveryCoordinator:
    """Turns WeChat's deliveries of one message into exactly one answer.

    The first delivery claims the message and starts its job in the background; every
    delivery (that one included) then waits for the answer inside its own window. A finished
    job's first reply part goes back passively and the rest to the account's overflow; if the
    last delivery cannot wait, it hands the job off and the whole answer overflows. The
    ledger's compare-and-set decides between the two, so an answer is never both served and
    overflowed.

    "Served" means a delivery returned the reply to a client still listening. A delivery whose
    client hangs up after the reply was counted (the handler cancelled before returning it)
    takes its serving back with ``retract``; a reply no delivery got out goes by the overflow
    once no delivery can follow. All waiting is on the injected clock.
    """

    def __init__(
        self,
        ledger: ClaimLedger,
        overflow: Callable[[str], Overflow],
        policy: DeliveryPolicy,
        clock: TimerClock,
        answer: Answerer,
        *,
        max_new_tokens: int,
        poll_s: float = 0.25,  # every waiting delivery reads the ledger this often: under a burst, the store's main load
        lease_renew_s: float = 2.0,
        journal: JobJournal | None = None,
        job_context: Callable[[], contextvars.Context] = contextvars.Context,
        trace_carrier: Callable[[], str] = lambda: "",
        blocking: Blocking = asyncio.to_thread,
    ):
        self._ledger = ledger
        self._overflow = overflow  # by account name
        self._policy = policy
        self._clock = clock
        self._answer = answer
        self._max_new_tokens = max_new_tokens
        self._poll_s = poll_s
        self._lease_renew_s = lease_renew_s  # a third of the ledger's job lease, or less
        self._journal = journal  # claimed messages, until dealt with: what recover_orphans takes over
        self._job_context = job_context  # fresh, but may carry the trace (observability/tracing.py)
        self._trace_carrier = trace_carrier  # this delivery's traceparent, kept in the ledger
        self._blocking = blocking
        self._jobs: set[asyncio.Task] = set()
        # Jobs of this replica that have recorded their answer: deliveries waiting here wake at
        # once instead of at their next look at the ledger.
        self._watch = LedgerWatch(ledger, clock, poll_s, blocking)
        self._recorded: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Event] = weakref.WeakValueDictionary()

    async def deliver(
        self, message: InboundMessage, *, arrived_s: float | None = None, hung_up: asyncio.Event | None = None
    ) -> Outcome:
        """``arrived_s``: when the delivery reached us, on this coordinator's clock (default
        now), so the window counts the time spent before this call. ``hung_up``: set when WeChat
        has given up on this delivery; a reply nobody receives must not count as served."""
        hung_up = hung_up or asyncio.Event()
        arrived_s = self._clock.now_s() if arrived_s is None else arrived_s
        window_end_s = arrived_s + self._policy.window_s
        job_id = uuid.uuid4().hex
        claim = await self._claim(message, job_id, window_end_s)
        if claim is None:  # no shared state for the whole window: answer directly; a duplicate beats a loss
            return Outcome("passive", await self._answer(message, self._max_new_tokens,
                                                         arrived_s + self._policy.window_s))
        try:
            outcome = await self._serve(message, claim, window_end_s, arrived_s, hung_up)
        except Exception:
            # The store failed after the claim: WeChat delivers again. A job of ours runs on,
            # and its answer is recorded (retried) and, if no delivery serves it, overflows.
            logger.exception("delivery of job %s: the ledger failed; asking WeChat to deliver again", claim.entry.job_id)
            return Outcome("not_yet", deliveries=claim.entry.deliveries)
        # A retry (even one that took over a dead owner's job) links back to the first delivery.
        return replace(outcome, first_trace=claim.entry.trace) if claim.entry.deliveries > 1 else outcome

    async def retract(self, message: InboundMessage, outcome: Outcome) -> None:
        """The reply ``outcome`` carried never left: its handler was cancelled first. Take the
        serving back, so a later delivery serves the reply or the overflow sends it; after the
        last delivery nobody else will, so it overflows now."""
        if outcome.passive_reply and outcome.delivery_id:
            entry = await self._blocking(self._ledger.lookup, message.dedupe_key)
            if entry is not None:
                await self._take_back(message, entry, outcome.delivery_id, outcome.last)

    async def _take_back(self, message: InboundMessage, entry: LedgerEntry, delivery_id: str, last: bool) -> Outcome:
        """Undo ``delivery_id``'s serving; what that delivery answers instead."""
        entry = await self._blocking(self._ledger.unserve, message.dedupe_key, delivery_id) or entry
        logger.warning("a delivery's reply never left (WeChat hung up); its serving is taken back")
        if not last:
            return Outcome("not_yet", deliveries=entry.deliveries)
        if entry.state == "done" and not entry.served:
            return await self._push_late(message, entry)
        return await self._handed_off(message, entry)

    async def _claim(self, message: InboundMessage, job_id: str, window_end_s: float) -> Claim | None:
        """The claim, retried while the window lasts: a store restarting for a second must not
        cost deduplication (a duplicate answer) when waiting would do. None: it stayed down."""
        pause_s = 0.1
        while True:
            try:
                return await self._blocking(self._ledger.claim, message.dedupe_key, job_id, self._trace_carrier())
            except Exception:
                if self._clock.now_s() + pause_s > window_end_s - CLAIM_RESERVE_S:
                    logger.exception("ledger unavailable; answering without deduplication")
                    return None
                logger.warning("ledger unavailable; claiming again in %.1f s", pause_s)
                await self._clock.sleep(pause_s)
                pause_s = min(pause_s * 2, 1.0)

    async def _serve(self, message: InboundMessage, claim: Claim, window_end_s: float, arrived_s: float,
                     hung_up: asyncio.Event) -> Outcome:
        """After the claim: run the job if it is ours, then wait in this delivery's window."""
        entry = claim.entry
        last = self._policy.is_last_delivery(entry.deliveries, entry.first_seen_s, arrived_s)
        if last:  # a short window (tests) keeps three quarters of itself
            window_end_s -= min(self._policy.last_reply_margin_s, self._policy.window_s / 4)
        if claim.won:
            # A fresh context: the job belongs to the message, not to this delivery. Ray Serve
            # cancels a request's downstream calls when its client disconnects, which WeChat
            # does after 5 s; in this request's context the job's calls would die with it.
            self._track(asyncio.create_task(self._run_job(message, claim.entry), context=self._job_context()))
        entry = await self._wait_for_answer(message, entry, window_end_s, hung_up)
        # Whether this delivery is the last is its own arrival's count: a later delivery
        # arriving meanwhile hands off for itself.
        if entry.state == "in_flight" and last:
            entry = await self._blocking(self._ledger.hand_off, message.dedupe_key) or entry
            if entry.state != "done":  # the job will hand its answer to the overflow
                return await self._handed_off(message, entry)
        if entry.state == "done" and last and self._clock.now_s() >= window_end_s:
            return await self._push_late(message, entry)
        if entry.state == "done" and hung_up.is_set():
            # Nobody is listening: leave the reply unserved, so the next delivery serves it or,
            # after the last window, the job's fallback sends it the other way.
            return Outcome("not_yet", deliveries=entry.deliveries)
        if entry.state == "done":
            delivery_id = uuid.uuid4().hex
            entry = await self._blocking(self._ledger.mark_served, message.dedupe_key, delivery_id) or entry
            if entry.state == "done":
                served = Outcome("passive", entry.reply(), entry.deliveries, delivery_id=delivery_id, last=last)
                if hung_up.is_set() or (last and self._clock.now_s() >= window_end_s):
                    # WeChat hung up, or the window ran out, while the serving was recorded:
                    # the reply would reach nobody.
                    return await self._take_back(message, entry, delivery_id, last)
                return served
        if entry.state == "pushed":  # handed off by an earlier delivery, which may not have got through
            return await self._handed_off(message, entry)
        return Outcome("not_yet", deliveries=entry.deliveries)

    async def _wait_for_answer(self, message: InboundMessage, entry: LedgerEntry, until_s: float,
                               hung_up: asyncio.Event) -> LedgerEntry:
        """The ledger entry once the job has an answer, this delivery's window has closed or
        its client has hung up, whichever comes first. A job of this replica wakes its waiters
        when it records its answer; one elsewhere is seen at the replica's next look at the
        ledger, which reads the entries of every waiting delivery at once."""
        recorded = self._recorded_event(message)
        while entry.state == "in_flight" and not hung_up.is_set():
            left_s = until_s - self._clock.now_s()
            if left_s <= 0:
                break
            looked = asyncio.ensure_future(self._watch.next_look(message.dedupe_key))
            waits = [looked, hung_up.wait(), self._clock.sleep(left_s)]
            if not recorded.is_set():
                waits.append(recorded.wait())
            await _first_of(*waits)
            if recorded.is_set():
                entry = await self._lookup(message) or entry
            elif looked.done() and not looked.cancelled():
                entry = looked.result() or entry
        return entry

    def _recorded_event(self, message: InboundMessage) -> asyncio.Event:
        """Set once this replica's job for the message has recorded its answer; it lives while
        the job or a waiting delivery holds it."""
        event = self._recorded.get(message.dedupe_key)
        if event is None:
            event = self._recorded[message.dedupe_key] = asyncio.Event()
        return event

    async def _push_late(self, message: InboundMessage, entry: LedgerEntry) -> Outcome:
        """The last delivery found the answer with too little of its window left to trust a
        passive reply to arrive: it goes by the overflow, as if no delivery had carried it."""
        if await self._blocking(self._ledger.push_unserved, message.dedupe_key, entry.job_id):
            await self._with_retries(entry.job_id, "unserved", self._overflow(message.account).unserved, message,
                                     entry.job_id, entry.parts)
            await self._mark(message, entry.job_id, overflow_done=True)
        return await self._handed_off(message, entry)

    async def _handed_off(self, message: InboundMessage, entry: LedgerEntry) -> Outcome:
        try:
            reply = await self._overflow(message.account).handed_off(message, entry.job_id)
        except Exception:  # the answer still reaches the overflow; only the notice is lost
            logger.exception("job %s: the hand-off notice failed", entry.job_id)
            reply = None
        if reply is None:
            return Outcome("success", deliveries=entry.deliveries)
        return Outcome("passive", reply, entry.deliveries)

    async def _record(self, message: InboundMessage, entry: LedgerEntry, reply: Reply) -> LedgerEntry | None:
        """Record the finished job; a store hiccup is retried, since losing the record would
        leave the answer neither served nor pushed."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                return await self._blocking(self._ledger.complete, message.dedupe_key, entry.job_id, reply)
            except Exception:
                logger.exception("recording job %s failed (attempt %d)", entry.job_id, attempt + 1)
                await self._clock.sleep(min(0.2 * 2**attempt, 5.0))
        return None

    async def drain(self) -> None:
        """Wait for every job this coordinator started (tests, shutdown)."""
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)

    async def _lookup(self, message: InboundMessage) -> LedgerEntry | None:
        return await self._blocking(self._ledger.lookup, message.dedupe_key)

    async def _run_job(self, message: InboundMessage, entry: LedgerEntry) -> None:
        """Answer the message, record the answer, hand on what a passive reply cannot carry.
        From the start until the answer has been dealt with, the journal holds the message and
        the lease is renewed: if this replica dies on the way, another picks the job up."""
        await self._journal_step("open", message)
        recorded = self._recorded_event(message)  # held until the job ends: its waiters share it
        renewing = asyncio.create_task(self._renew_lease(message, entry.job_id))
        renewal_handed_on = False
        try:
            budget = self._policy.token_budget(entry.first_seen_s, self._clock.now_s(), self._max_new_tokens)
            # The deadline travels too: generate knows its own pace under the current load,
            # which the budget above only estimates from a setting.
            reply = await self._answer(message, budget, self._policy.passive_deadline_s(entry.first_seen_s))
            finished = await self._record(message, entry, reply)
            if finished is None:
                logger.error("job %s: its answer could not be recorded (taken over, or the store is down)", entry.job_id)
                return
            recorded.set()
            if finished.state == "done":  # a separate task: deliveries wait on this job, not on that
                self._track(asyncio.create_task(self._push_if_unserved(message, entry, reply.parts, renewing),
                                                context=self._job_context()))
                renewal_handed_on = True
            # Served passively: only the later parts of a long answer overflow. Handed off: all.
            handed_off = finished.state == "pushed"
            await self._with_retries(entry.job_id, "hold", self._overflow(message.account).hold, message, entry.job_id,
                                     reply.parts, 0 if handed_off else 1)
            await self._mark(message, entry.job_id, later_held=True, overflow_done=handed_off)
            if handed_off:
                await self._journal_step("close", message)
        finally:
            if not renewal_handed_on:
                renewing.cancel()

    async def _renew_lease(self, message: InboundMessage, job_id: str) -> None:
        """While the job runs, keep its lease: a live owner is never taken over, and a dead
        one's lease lapses within one lease, before WeChat's last delivery."""
        while True:
            await self._clock.sleep(self._lease_renew_s)
            try:
                if not await self._blocking(self._ledger.renew, message.dedupe_key, job_id):
                    return  # taken over or expired: not ours to keep
            except Exception:  # a store hiccup: the next renewal may get through
                logger.warning("job %s: renewing its lease failed", job_id, exc_info=True)

    async def _push_if_unserved(self, message: InboundMessage, entry: LedgerEntry, parts: tuple[str, ...],
                                renewing: asyncio.Task | None = None) -> None:
        """WeChat may have hung up on every delivery (an overloaded ingress answers after its
        5 s): then nobody carried the passive reply. Once the last window has closed, the
        unserved first part overflows too (the later parts already have)."""
        try:
            deadline_s = self._policy.passive_deadline_s(entry.first_seen_s) + 1.0
            while (left_s := deadline_s - self._clock.now_s()) > 0:
                await self._clock.sleep(left_s)
            if await self._with_retries(entry.job_id, "mark unserved", self._blocking, self._ledger.push_unserved,
                                        message.dedupe_key, entry.job_id):
                logger.warning("job %s: no delivery carried its reply; it overflows", entry.job_id)
                await self._with_retries(entry.job_id, "unserved", self._overflow(message.account).unserved, message,
                                         entry.job_id, parts)
                await self._mark(message, entry.job_id, overflow_done=True)
            await self._journal_step("close", message)
        finally:
            if renewing is not None:
                renewing.cancel()

    async def recover_orphans(self, limit: int = 32) -> int:
        """One look at the journal's due messages; take over each whose owner has died.
        Returns how many were taken over. Every ingress replica calls this every few seconds."""
        if self._journal is None:
            return 0
        try:
            due = await self._blocking(self._journal.due, limit)
        except Exception:
            logger.warning("the job journal could not be read", exc_info=True)
            return 0
        async def recover(message: InboundMessage) -> bool:
            try:
                return await self._recover(message)
            except Exception:
                logger.exception("recovering a job failed; its journal entry comes due again")
                return False

        return sum(await asyncio.gather(*(recover(message) for message in due)))

    async def _recover(self, message: InboundMessage) -> bool:
        entry = await self._lookup(message)
        if entry is None:  # expired: nothing left to do for it
            await self._journal_step("close", message)
            return False
        if entry.overflow_done or (entry.state == "done" and entry.served and entry.later_held):
            await self._journal_step("close", message)  # dealt with; its owner died before closing
            return False
        if entry.state == "done" and not entry.served and \
                self._clock.now_s() < self._policy.passive_deadline_s(entry.first_seen_s) + 1.0:
            return False  # a delivery may still serve it
        dead_owner = entry.job_id
        taken = await self._blocking(self._ledger.take_over, message.dedupe_key, uuid.uuid4().hex)
        if taken is None:  # its owner is alive (or another replica took it)
            return False
        logger.warning("job %s: its owner died; recovering it (%s)", dead_owner, taken.state)
        if taken.state == "in_flight":  # not answered yet: answer it, as its owner would have
            self._track(asyncio.create_task(self._run_job(message, taken), context=self._job_context()))
            return True
        # Answered: queue what its owner had not handed on yet, under the owner's item ids.
        parts, job_id = taken.parts, taken.job_id
        missing: tuple[str, ...] = ()
        if taken.state == "done" and taken.served:
            missing, first_part = parts, 1  # the later parts
        elif taken.state == "pushed" or await self._blocking(self._ledger.push_unserved, message.dedupe_key, job_id):
            missing, first_part = parts, 0  # nobody carried the first part either
        if missing:
            if first_part == 0 and taken.later_held:
                missing = parts[:1]
            await self._with_retries(job_id, "recovered hold", self._overflow(message.account).hold, message, job_id,
                                     missing, first_part)
            await self._mark(message, job_id, later_held=True, overflow_done=first_part == 0)
        await self._journal_step("close", message)
        return True

    async def _mark(self, message: InboundMessage, job_id: str, **flags: bool) -> None:
        """Note in the ledger what the overflow now has; lost, recovery may queue it twice."""
        try:
            await self._blocking(self._ledger.mark, message.dedupe_key, job_id, **flags)
        except Exception:
            logger.warning("job %s: noting what was handed on failed", job_id, exc_info=True)

    async def _journal_step(self, step: str, message: InboundMessage) -> None:
        """Open or close the message's journal entry; a store hiccup costs only recoverability."""
        if self._journal is None:
            return
        try:
            await self._blocking(getattr(self._journal, step), message)
        except Exception:
            logger.warning("journal %s failed for a job", step, exc_info=True)

    def _track(self, task: asyncio.Task) -> None:
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _with_retries(self, job_id: str, step: str, call, *args):
        """A committed answer's overflow must not die with one store hiccup: retried with backoff."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                return await call(*args)
            except Exception:
                logger.exception("job %s: %s failed (attempt %d)", job_id, step, attempt + 1)
                await self._clock.sleep(min(0.2 * 2**attempt, 5.0))
        logger.error("job %s: %s failed %d times; its answer is lost", job_id, step, RECORD_ATTEMPTS)


class LedgerWatch:
    """Every ``poll_s``, one read of the ledger entries all waiting deliveries of this replica
    want, however many there are: under a burst, per-delivery polling was the store's main
    load, and it starved the lease renewals queued behind it."""

    def __init__(self, ledger: ClaimLedger, clock: TimerClock, poll_s: float, blocking: Blocking):
        self._ledger = ledger
        self._clock = clock
        self._poll_s = poll_s
        self._blocking = blocking
        self._wanted: dict[tuple[str, str, str], list[asyncio.Future]] = {}
        self._looking: asyncio.Task | None = None

    async def next_look(self, dedupe_key: tuple[str, str, str]) -> LedgerEntry | None:
        """The message's entry as the next look finds it (None: gone)."""
        seen = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(dedupe_key, []).append(seen)
        if self._looking is None or self._looking.done():
            self._looking = asyncio.ensure_future(self._look())
        return await seen

    async def _look(self) -> None:
        while self._wanted:
            await self._clock.sleep(self._poll_s)
            wanted, self._wanted = self._wanted, {}
            try:
                entries = await self._blocking(self._ledger.lookup_many, list(wanted))
            except Exception as exc:  # the store is down: each waiter sees the failure
                for futures in wanted.values():
                    for seen in futures:
                        if not seen.done():
                            seen.set_exception(exc)
                continue
            for dedupe_key, futures in wanted.items():
                for seen in futures:
                    if not seen.done():
                        seen.set_result(entries.get(dedupe_key))


async def _first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` finishes; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
