"""The delivery engine's bookkeeping, on a ManualClock with store calls made in the loop: the
policy's arithmetic, the fallback push, store failures and retries, leases, and the job
journal's recovery of jobs whose owner died. The races at WeChat's window edges are in
test_delivery_races.py."""

from __future__ import annotations

import asyncio

import pytest

from functions.common.clock import ManualClock
from functions.ingress.delivery import DeliveryCoordinator, DeliveryPolicy
from functions.ingress.overflow import PushOverflow
from functions.common.job_journal import JobJournal
from functions.common.ledger import ClaimLedger
from functions.common.outbox import PENDING_QUEUE, Outbox
from functions.common.records import InboundMessage, Reply
from functions.common.state import SQLiteStateStore
from tests.fakes import inline

POLICY = DeliveryPolicy(window_s=4.5, deliveries=3, redelivery_interval_s=5.0, tokens_per_s=10, min_new_tokens=16, overhead_s=1.0)


def test_the_third_delivery_is_the_last_by_count_or_by_clock():
    assert not POLICY.is_last_delivery(1, first_seen_s=100, now_s=100)
    assert not POLICY.is_last_delivery(2, first_seen_s=100, now_s=105)
    assert POLICY.is_last_delivery(3, first_seen_s=100, now_s=110)
    assert POLICY.is_last_delivery(2, first_seen_s=100, now_s=109.6)  # the second never reached us


def test_the_token_budget_shrinks_toward_the_last_window():
    assert POLICY.passive_deadline_s(100) == 114.5
    assert POLICY.token_budget(100, now_s=100, max_new_tokens=96) == 96  # 13.5 s left: capped
    assert POLICY.token_budget(100, now_s=108, max_new_tokens=96) == 55  # 5.5 s left
    assert POLICY.token_budget(100, now_s=114, max_new_tokens=96) == 16  # never below the floor


def test_the_job_is_told_the_moment_the_last_delivery_stops_waiting(parts):
    """Not the end of WeChat's last window: the last delivery gives up a margin earlier, and an
    answer budgeted for the window's end would miss it and go by push."""
    clock = parts[0]
    told: list[float] = []

    async def answer(message, budget, deadline_s=None):
        told.append(deadline_s)
        return ONE_PART

    async def scenario():
        delivering = coordinator(parts, answer)
        outcome = await delivering.deliver(MESSAGE)
        await clock.advance(20)
        await delivering.drain()
        return outcome

    first_seen_s = clock.now_s()
    assert asyncio.run(scenario()).kind == "passive"
    assert told == [POLICY.passive_deadline_s(first_seen_s) - POLICY.last_reply_margin_s]
    assert POLICY.answer_deadline_s(100) == 113.5


MESSAGE = InboundMessage("default", "gh", "o-user", 1, "text", msg_id="42", content="退货？")
ONE_PART = Reply("<xml>passive</xml>", parts=("七天无理由退货。",))


@pytest.fixture
def parts(tmp_path):
    clock = ManualClock(1_000_000)
    store = SQLiteStateStore(tmp_path / "state.db", clock)
    return clock, store, ClaimLedger(store, clock, ttl_s=3600, job_lease_s=60), Outbox(store, clock)


def coordinator(parts, answer, *, ledger=None, overflow=None, journal=None, lease_renew_s=2.0):
    clock, _, own_ledger, outbox = parts
    pushed = overflow or PushOverflow(outbox, clock, blocking=inline)
    return DeliveryCoordinator(ledger or own_ledger, lambda account: pushed, POLICY, clock, answer, max_new_tokens=64,
                               poll_s=0.25, lease_renew_s=lease_renew_s, journal=journal, blocking=inline)


class Gated:
    """An answerer that answers once ``release`` is set; ``asked`` lists what it was asked."""

    def __init__(self, reply: Reply = ONE_PART):
        self.release = asyncio.Event()
        self.asked: list[str] = []
        self.reply = reply

    async def __call__(self, message, budget, deadline_s=None):
        self.asked.append(message.msg_id)
        await self.release.wait()
        return self.reply


async def answer_now(message, budget, deadline_s=None):
    return ONE_PART


def pushed_ids(store) -> list[str]:
    return sorted(item_id for item_id, _ in store.lease(PENDING_QUEUE, now_s=2e6, lease_s=1, limit=10))


def test_an_answer_no_delivery_carried_is_pushed_after_the_last_window(parts):
    clock, store, ledger, _ = parts
    answer = Gated()

    async def scenario():
        delivering = coordinator(parts, answer)
        hung_up = asyncio.Event()
        delivery = asyncio.ensure_future(delivering.deliver(MESSAGE, hung_up=hung_up))
        await clock.advance(2)
        hung_up.set()  # WeChat hung up; no delivery comes back
        await clock.settle()
        outcome = await delivery
        await clock.advance(20)  # every window has closed
        answer.release.set()
        await clock.advance(1)
        await delivering.drain()
        return outcome

    assert asyncio.run(scenario()).kind == "not_yet"
    assert ledger.lookup(MESSAGE.dedupe_key).state == "pushed"
    assert [item_id.rsplit(":", 1)[1] for item_id in pushed_ids(store)] == ["0"]


def test_an_answer_a_delivery_carried_is_not_pushed(parts):
    clock, store, ledger, outbox = parts

    async def scenario():
        delivering = coordinator(parts, answer_now)
        outcome = await delivering.deliver(MESSAGE)
        await clock.advance(20)
        await delivering.drain()
        return outcome

    assert asyncio.run(scenario()).kind == "passive"
    assert ledger.lookup(MESSAGE.dedupe_key).served and outbox.backlog() == 0


def test_a_reply_ready_after_wechat_hung_up_is_not_counted_as_served(parts):
    """The delivery's client gave up just before the answer was ready: returning it would
    reach nobody, so it stays unserved and is pushed after the last window. Counted as
    served, it would be lost."""
    clock, store, ledger, _ = parts
    answer = Gated()

    async def scenario():
        hung_up = asyncio.Event()
        delivering = coordinator(parts, answer)
        delivery = asyncio.ensure_future(delivering.deliver(MESSAGE, hung_up=hung_up))
        await clock.advance(1)
        hung_up.set()
        answer.release.set()
        await clock.settle()
        outcome = await delivery
        await clock.advance(20)
        await delivering.drain()
        return outcome

    assert asyncio.run(scenario()).kind == "not_yet"
    entry = ledger.lookup(MESSAGE.dedupe_key)
    assert entry.state == "pushed" and not entry.served
    assert [item_id.rsplit(":", 1)[1] for item_id in pushed_ids(store)] == ["0"]


def test_the_window_counts_from_when_the_delivery_reached_us(parts):
    clock = parts[0]
    answer = Gated()

    async def scenario():
        delivering = coordinator(parts, answer)  # a 4.5 s window
        arrived_s = clock.now_s() - 4.0  # decrypt and queueing already took 4 s of it
        delivery = asyncio.ensure_future(delivering.deliver(MESSAGE, arrived_s=arrived_s))
        await clock.advance(0.5)
        assert delivery.done()  # the window closed at 0.5 s, not at 4.5
        answer.release.set()
        await clock.advance(20)
        await delivering.drain()
        return await delivery

    assert asyncio.run(scenario()).kind == "not_yet"


class FlakyOverflow(PushOverflow):
    """The store hiccups twice when the answer is handed to the outbox."""

    def __init__(self, outbox, clock):
        super().__init__(outbox, clock, blocking=inline)
        self.failures = 2

    async def hold(self, message, job_id, parts, first_part):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        await super().hold(message, job_id, parts, first_part)


def test_a_store_hiccup_while_handing_the_answer_on_is_retried(parts):
    clock, store, ledger, outbox = parts
    flaky = FlakyOverflow(outbox, clock)

    async def answer(message, budget, deadline_s=None):
        return Reply("<xml>long</xml>", parts=("第一段。", "第二段。"))

    async def scenario():
        delivering = coordinator(parts, answer, overflow=flaky)
        await delivering.deliver(MESSAGE)
        await clock.advance(20)
        await delivering.drain()

    asyncio.run(scenario())
    assert flaky.failures == 0 and outbox.backlog() == 1  # the second part made it to the outbox


class FlakyLedger:
    """A claim ledger over a store that fails its first ``claim_failures`` claims and its first
    ``lookup_failures`` lookups (a Redis restart, a locked SQLite file)."""

    def __init__(self, ledger: ClaimLedger, *, claim_failures: int = 0, lookup_failures: int = 0):
        self._ledger = ledger
        self.claim_failures = claim_failures
        self.lookup_failures = lookup_failures

    def claim(self, *args):
        if self.claim_failures:
            self.claim_failures -= 1
            raise ConnectionError("Connection refused")
        return self._ledger.claim(*args)

    def lookup(self, *args):
        if self.lookup_failures:
            self.lookup_failures -= 1
            raise ConnectionError("Connection refused")
        return self._ledger.lookup(*args)

    def lookup_many(self, *args):
        if self.lookup_failures:
            self.lookup_failures -= 1
            raise ConnectionError("Connection refused")
        return self._ledger.lookup_many(*args)

    def __getattr__(self, name):
        return getattr(self._ledger, name)


def test_a_store_restarting_during_the_claim_costs_no_deduplication(parts):
    clock, _, ledger, _ = parts
    answered = []
    flaky = FlakyLedger(ledger, claim_failures=2)

    async def answer(message, budget, deadline_s=None):
        answered.append(message.msg_id)
        return ONE_PART

    async def scenario():
        delivering = coordinator(parts, answer, ledger=flaky)
        first = asyncio.ensure_future(delivering.deliver(MESSAGE))
        await clock.advance(1)  # two pauses before the claim goes through
        again = await delivering.deliver(MESSAGE)  # WeChat's retry: the same job, not a second answer
        return await first, again

    first, again = asyncio.run(scenario())
    assert flaky.claim_failures == 0 and answered == ["42"]
    assert first.kind == "passive" and again.kind == "passive" and again.deliveries == 2


def test_a_store_failing_after_the_claim_asks_wechat_again_and_loses_nothing(parts):
    clock, store, ledger, outbox = parts
    flaky = FlakyLedger(ledger, lookup_failures=1)
    answer = Gated()

    async def scenario():
        delivering = coordinator(parts, answer, ledger=flaky)
        delivery = asyncio.ensure_future(delivering.deliver(MESSAGE))  # its first look at the ledger fails: no 500
        await clock.advance(1)
        assert delivery.done()
        outcome = await delivery
        await clock.advance(20)  # no delivery comes back for it
        answer.release.set()
        await clock.advance(1)
        await delivering.drain()
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.kind == "not_yet" and flaky.lookup_failures == 0
    assert ledger.lookup(MESSAGE.dedupe_key).state == "pushed" and outbox.backlog() == 1  # the answer overflowed


def test_a_slow_job_renews_its_lease_so_a_retry_waits_for_it_instead_of_taking_over(parts):
    clock, _, ledger, _ = parts
    answer = Gated()

    async def scenario():
        delivering = coordinator(parts, answer)
        first = asyncio.ensure_future(delivering.deliver(MESSAGE))
        await clock.advance(61)  # past the 60 s lease the job was claimed with: its owner renewed it
        retry = asyncio.ensure_future(delivering.deliver(MESSAGE))
        await clock.advance(1)
        answer.release.set()
        await clock.advance(1)
        again = await retry
        await clock.advance(20)
        await delivering.drain()
        return await first, again

    first, again = asyncio.run(scenario())
    assert answer.asked == ["42"] and first.kind == "not_yet" and again.deliveries == 2


def test_a_job_whose_owner_died_after_the_last_delivery_is_answered_by_another_replica(parts):
    clock, store, ledger, outbox = parts
    journal = JobJournal(store, clock, recheck_s=60)
    answered = []

    async def never(message, budget, deadline_s=None):
        await asyncio.Event().wait()  # its replica is killed before the answer is ready

    async def answer(message, budget, deadline_s=None):
        answered.append(message.msg_id)
        return ONE_PART

    async def scenario():
        doomed = coordinator(parts, never, journal=journal)
        delivery = asyncio.ensure_future(doomed.deliver(MESSAGE))
        await clock.advance(5)
        await delivery
        ledger.hand_off(MESSAGE.dedupe_key)  # WeChat's last delivery answered "success"
        for job in list(doomed._jobs._running):
            job.cancel()  # the replica dies with its job
        await clock.settle()
        survivor = coordinator(parts, answer, journal=journal)
        assert await survivor.recover_orphans() == 0  # nothing due yet
        await clock.advance(61)  # the journal entry comes due, the dead owner's lease has lapsed
        assert await survivor.recover_orphans() == 1
        await clock.advance(1)
        await survivor.drain()
        await clock.advance(61)
        assert await survivor.recover_orphans() == 0  # dealt with: never taken twice

    asyncio.run(scenario())
    assert answered == ["42"] and outbox.backlog() == 1 and journal.size() == 0
    assert ledger.lookup(MESSAGE.dedupe_key).state == "pushed"


def test_a_live_owner_is_never_taken_over_and_its_journal_entry_closes_when_it_is_done(parts):
    clock, store, ledger, outbox = parts
    journal = JobJournal(store, clock, recheck_s=1)
    slow = Gated()

    async def scenario():
        owner = coordinator(parts, slow, journal=journal)
        delivery = asyncio.ensure_future(owner.deliver(MESSAGE))
        await clock.advance(120)  # long past the claim's lease: but the owner renews it
        assert await coordinator(parts, slow, journal=journal).recover_orphans() == 0
        slow.release.set()
        await clock.advance(20)
        await owner.drain()
        await delivery

    asyncio.run(scenario())
    assert journal.size() == 0 and outbox.backlog() == 1  # no delivery served it: pushed, once


def test_an_answer_its_owner_recorded_but_never_handed_on_is_pushed_whole_once(parts):
    clock, store, ledger, outbox = parts
    journal = JobJournal(store, clock, recheck_s=60)
    reply = Reply("<xml>passive</xml>", parts=("第一段。", "第二段。"))
    ledger.claim(MESSAGE.dedupe_key, "job-dead")
    journal.open(MESSAGE)
    ledger.complete(MESSAGE.dedupe_key, "job-dead", reply)  # then its replica died: nothing queued

    async def unused(message, budget, deadline_s=None):
        raise AssertionError("an answered job is not generated again")

    async def scenario():
        await clock.advance(120)  # every window closed, the lease lapsed, the journal entry due
        survivor = coordinator(parts, unused, journal=journal)
        assert await survivor.recover_orphans() == 1
        await clock.advance(120)
        assert await survivor.recover_orphans() == 0

    asyncio.run(scenario())
    assert pushed_ids(store) == ["job-dead:0", "job-dead:1"] and journal.size() == 0


def test_an_answer_already_handed_on_is_not_queued_again(parts):
    clock, store, ledger, outbox = parts
    journal = JobJournal(store, clock, recheck_s=60)
    ledger.claim(MESSAGE.dedupe_key, "job-dead")
    journal.open(MESSAGE)
    ledger.hand_off(MESSAGE.dedupe_key)
    ledger.complete(MESSAGE.dedupe_key, "job-dead", Reply("<xml/>", parts=("全文。",)))
    ledger.mark(MESSAGE.dedupe_key, "job-dead", overflow_done=True)  # queued, sent; then the replica died

    async def scenario():
        await clock.advance(120)
        return await coordinator(parts, None, journal=journal).recover_orphans()

    assert asyncio.run(scenario()) == 0 and outbox.backlog() == 0 and journal.size() == 0


def test_an_answer_ready_at_the_end_of_the_last_window_is_pushed_not_risked_passively(parts):
    """Near the end of WeChat's last window a passive reply may arrive after WeChat hung up,
    and nothing would follow it: the answer goes by the outbox instead, once."""
    clock, store, ledger, outbox = parts
    answer = Gated()

    async def scenario():
        delivering = coordinator(parts, answer)
        outcomes = []
        for at_s in (0.0, 5.0):
            delivery = asyncio.ensure_future(delivering.deliver(MESSAGE))
            await clock.advance(5)
            outcomes.append(await delivery)
        last = asyncio.ensure_future(delivering.deliver(MESSAGE))
        await clock.advance(3.6)  # past the last window's 1 s margin (of 4.5), inside WeChat's 5 s
        answer.release.set()
        await clock.advance(1)
        outcomes.append(await last)
        await clock.advance(20)
        await delivering.drain()
        return outcomes

    assert [outcome.kind for outcome in asyncio.run(scenario())] == ["not_yet", "not_yet", "success"]
    assert outbox.backlog() == 1  # pushed once: the job's own fallback found it pushed already
