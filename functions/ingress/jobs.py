"""A message's one job: answer it, record the answer in the ledger, hand on what a passive
reply cannot carry, and, if its replica dies on the way, be taken over by another from the job
journal. The delivery coordinator (``delivery.py``) starts jobs and waits on them; everything
here runs in the job's own context, never in a delivery's."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable

from functions.common.clock import TimerClock
from functions.common.job_journal import JobJournal
from functions.common.ledger import ClaimLedger, LedgerEntry
from functions.common.records import InboundMessage, Reply
from functions.ingress.delivery_policy import DeliveryPolicy
from functions.ingress.overflow import Blocking, Overflow

logger = logging.getLogger("wxassist.delivery")
RECORD_ATTEMPTS = 8

# (message, max_new_tokens, deadline_s or None) -> the reply
Answerer = Callable[[InboundMessage, int, float | None], Awaitable[Reply]]


class AnswerJobs:
    """The jobs of one ingress replica, one per claimed message, and the recovery of jobs
    whose replica died. All waiting is on the injected clock."""

    def __init__(
        self,
        ledger: ClaimLedger,
        overflow: Callable[[str], Overflow],
        policy: DeliveryPolicy,
        clock: TimerClock,
        answer: Answerer,
        *,
        max_new_tokens: int,
        lease_renew_s: float,
        journal: JobJournal | None,
        job_context: Callable[[], contextvars.Context],
        blocking: Blocking,
    ):
        self._ledger = ledger
        self._overflow = overflow  # by account name
        self._policy = policy
        self._clock = clock
        self._answer = answer
        self._max_new_tokens = max_new_tokens
        self._lease_renew_s = lease_renew_s  # a third of the ledger's job lease, or less
        self._journal = journal  # claimed messages, until dealt with: what recover_orphans takes over
        self._job_context = job_context  # fresh, but may carry the trace (observability/tracing.py)
        self._blocking = blocking
        self._running: set[asyncio.Task] = set()
        # Jobs of this replica that have recorded their answer: deliveries waiting here wake at
        # once instead of at their next look at the ledger.
        self._recorded: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Event] = weakref.WeakValueDictionary()

    def start(self, message: InboundMessage, entry: LedgerEntry) -> None:
        """Run the message's job in the background, in a fresh context: the job belongs to the
        message, not to the delivery that claimed it. Ray Serve cancels a request's downstream
        calls when its client disconnects, which WeChat does after 5 s; in that request's
        context the job's calls would die with it."""
        self._track(asyncio.create_task(self._run(message, entry), context=self._job_context()))

    def recorded_event(self, message: InboundMessage) -> asyncio.Event:
        """Set once this replica's job for the message has recorded its answer; it lives while
        the job or a waiting delivery holds it."""
        event = self._recorded.get(message.dedupe_key)
        if event is None:
            event = self._recorded[message.dedupe_key] = asyncio.Event()
        return event

    async def overflow_unserved(self, message: InboundMessage, entry: LedgerEntry) -> None:
        """The answer goes by the overflow, as if no delivery had carried it (unless a delivery
        already has, or it already went)."""
        if await self._blocking(self._ledger.push_unserved, message.dedupe_key, entry.job_id):
            await self._with_retries(entry.job_id, "unserved", self._overflow(message.account).unserved, message,
                                     entry.job_id, entry.parts)
            await self._mark(message, entry.job_id, overflow_done=True)

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
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _lookup(self, message: InboundMessage) -> LedgerEntry | None:
        return await self._blocking(self._ledger.lookup, message.dedupe_key)

    async def _run(self, message: InboundMessage, entry: LedgerEntry) -> None:
        """Answer the message, record the answer, hand on what a passive reply cannot carry.
        From the start until the answer has been dealt with, the journal holds the message and
        the lease is renewed: if this replica dies on the way, another picks the job up."""
        await self._journal_step("open", message)
        recorded = self.recorded_event(message)  # held until the job ends: its waiters share it
        renewing = asyncio.create_task(self._renew_lease(message, entry.job_id))
        renewal_handed_on = False
        try:
            budget = self._policy.token_budget(entry.first_seen_s, self._clock.now_s(), self._max_new_tokens)
            # The deadline travels too: generate knows its own pace under the current load,
            # which the budget above only estimates from a setting.
            reply = await self._answer(message, budget, self._policy.answer_deadline_s(entry.first_seen_s))
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
            self.start(message, taken)
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
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _with_retries(self, job_id: str, step: str, call, *args):
        """A committed answer's overflow must not die with one store hiccup: retried with backoff."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                return await call(*args)
            except Exception:
                logger.exception("job %s: %s failed (attempt %d)", job_id, step, attempt + 1)
                await self._clock.sleep(min(0.2 * 2**attempt, 5.0))
        logger.error("job %s: %s failed %d times; its answer is lost", job_id, step, RECORD_ATTEMPTS)

