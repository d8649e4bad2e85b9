"""WeChat's deliveries of one message, turned into exactly one answer.

WeChat waits about 5 s for each delivery and tries three times, about 5 s apart, so a
message's passive reply can arrive until about 15 s after the first delivery
(``delivery_policy.py``). Every delivery waits for the answer inside its own window. When the
last one cannot wait any longer, it answers for the job and hands it off. Where the answer then
goes, and where the parts a passive reply cannot carry go, is the account's overflow
(``overflow.py``): pushed through the customer-service API (passive-then-push) or held for the
user to fetch with "继续" (passive-only). The job itself is ``jobs.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace

from functions.common.clock import TimerClock
from functions.common.job_journal import JobJournal
from functions.common.ledger import Claim, ClaimLedger, LedgerEntry
from functions.common.records import InboundMessage, Outcome
from functions.ingress.delivery_policy import DeliveryPolicy
from functions.ingress.jobs import AnswerJobs, Answerer
from functions.ingress.ledger_watch import LedgerWatch, first_of
from functions.ingress.overflow import Blocking, Overflow

__all__ = ["DeliveryCoordinator", "DeliveryPolicy"]

logger = logging.getLogger("wxassist.delivery")
CLAIM_RESERVE_S = 2.5  # of a delivery's window, kept for answering without the ledger


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
        self._trace_carrier = trace_carrier  # this delivery's traceparent, kept in the ledger
        self._blocking = blocking
        self._jobs = AnswerJobs(ledger, overflow, policy, clock, answer, max_new_tokens=max_new_tokens,
                                lease_renew_s=lease_renew_s, journal=journal, job_context=job_context,
                                blocking=blocking)
        self._watch = LedgerWatch(ledger, clock, poll_s, blocking)

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
        if last:
            window_end_s -= self._policy.last_reply_margin()
        if claim.won:
            self._jobs.start(message, claim.entry)
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
        recorded = self._jobs.recorded_event(message)
        while entry.state == "in_flight" and not hung_up.is_set():
            left_s = until_s - self._clock.now_s()
            if left_s <= 0:
                break
            looked = asyncio.ensure_future(self._watch.next_look(message.dedupe_key))
            waits = [looked, hung_up.wait(), self._clock.sleep(left_s)]
            if not recorded.is_set():
                waits.append(recorded.wait())
            await first_of(*waits)
            if recorded.is_set():
                entry = await self._lookup(message) or entry
            elif looked.done() and not looked.cancelled():
                entry = looked.result() or entry
        return entry

    async def _push_late(self, message: InboundMessage, entry: LedgerEntry) -> Outcome:
        """The last delivery found the answer with too little of its window left to trust a
        passive reply to arrive: it goes by the overflow, as if no delivery had carried it."""
        await self._jobs.overflow_unserved(message, entry)
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

    async def drain(self) -> None:
        """Wait for every job this coordinator started (tests, shutdown)."""
        await self._jobs.drain()

    async def recover_orphans(self, limit: int = 32) -> int:
        """One look at the job journal; take over each job whose owner has died. Returns how
        many were taken over. Every ingress replica calls this every few seconds."""
        return await self._jobs.recover_orphans(limit)

    async def _lookup(self, message: InboundMessage) -> LedgerEntry | None:
        return await self._blocking(self._ledger.lookup, message.dedupe_key)
