"""Exactly once at the edges of WeChat's windows, on a ManualClock.

Each scenario plays WeChat's schedule (tests/unit/wechat_schedule.py): deliveries at 0, 5
and 10 s, each hung up on after 5 s, against a real claim ledger and outbox in SQLite. An
answer is received exactly once: passively by a delivery WeChat was still waiting on, or
pushed, never both and never neither.
"""

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
from tests.unit.wechat_schedule import WeChat

START_S = 1_000_000.0
MESSAGE = InboundMessage("default", "gh", "o-user", 1, "text", msg_id="42", content="退货？")
REPLY = Reply("<xml>七天无理由退货</xml>", parts=("七天无理由退货。",))
# WeChat's own edges: our windows end at 4.5 and 9.5 s, and the last (with its 1 s margin) at
# 13.5 s; WeChat hangs up at 5, 10 and 15 s.
EDGES_S = (4.5, 5.0, 9.5, 10.0, 13.5, 15.0)


class Service:
    """``replicas`` ingress replicas' coordinators over one fresh store, each watching the job
    journal for orphans as the ingress does; the answer takes ``answer_s`` and every store call
    ``store_s`` (a busy SQLite file, a Redis round trip)."""

    def __init__(self, tmp_path, answer_s: float, store_s: float = 0.0, replicas: int = 1):
        self.clock = ManualClock(START_S)
        self.store = SQLiteStateStore(tmp_path / "state.db", self.clock)
        self.ledger = ClaimLedger(self.store, self.clock, ttl_s=3600, job_lease_s=6)
        self.journal = JobJournal(self.store, self.clock, recheck_s=6)

        async def blocking(call, *args, **kwargs):
            await self.clock.sleep(store_s)
            return call(*args, **kwargs)

        pushed = PushOverflow(Outbox(self.store, self.clock), self.clock, blocking=blocking)
        self.answered = 0

        async def answer(message, budget, deadline_s=None):
            self.answered += 1
            await self.clock.sleep(answer_s)
            return REPLY

        self.replicas = [
            DeliveryCoordinator(self.ledger, lambda account: pushed, DeliveryPolicy(), self.clock, answer,
                                max_new_tokens=64, poll_s=0.25, lease_renew_s=2.0, journal=self.journal,
                                blocking=blocking)
            for _ in range(replicas)
        ]
        self.coordinator = self.replicas[0]
        self.wechat = WeChat(self.clock, self.replicas)

    def pushed_first_parts(self) -> int:
        return self.store.queue_size(PENDING_QUEUE)  # the reply has one part: one item per push

    async def send(self, lags_s: tuple[float, ...] = ()):
        async def watch(replica: DeliveryCoordinator) -> None:
            while True:
                await replica.recover_orphans()
                await self.clock.sleep(2.0)

        watches = [asyncio.ensure_future(watch(replica)) for replica in self.replicas]
        sending = asyncio.ensure_future(self.wechat.send(MESSAGE, lags_s))
        await self.clock.advance(60)  # every window closed, every fallback run
        for replica in self.replicas:
            await replica.drain()
        for watching in watches:
            watching.cancel()
        return await sending


def run(tmp_path, answer_s: float, lags_s: tuple[float, ...] = (), store_s: float = 0.0, replicas: int = 1):
    service = Service(tmp_path, answer_s, store_s, replicas)
    received = asyncio.run(service.send(lags_s))
    return service, received


@pytest.mark.parametrize("replicas", (1, 2))
@pytest.mark.parametrize("store_s", (0.0, 0.3))
@pytest.mark.parametrize("edge_s", EDGES_S)
@pytest.mark.parametrize("offset_s", (-0.01, 0.0, 0.01))
def test_an_answer_ready_around_a_window_edge_is_received_exactly_once(tmp_path, edge_s, offset_s, store_s, replicas):
    service, received = run(tmp_path, edge_s + offset_s, store_s=store_s, replicas=replicas)
    assert len(received.passive) + service.pushed_first_parts() == 1, received
    assert service.answered == 1 and service.journal.size() == 0


@pytest.mark.parametrize("store_s", (0.0, 0.3))
@pytest.mark.parametrize("lag_s", (0.4, 1.0, 1.6, 2.5))
@pytest.mark.parametrize("answer_s", (13.6, 13.9, 14.5, 14.99, 15.0, 15.3, 16.0))
def test_a_last_delivery_that_reached_us_late_never_loses_or_doubles_the_answer(tmp_path, lag_s, answer_s, store_s):
    """The third delivery spent ``lag_s`` in a proxy queue: our window for it may outlast
    WeChat's patience. A reply ready after WeChat hung up must be pushed, once."""
    service, received = run(tmp_path, answer_s, lags_s=(0.0, 0.0, lag_s), store_s=store_s)
    assert len(received.passive) + service.pushed_first_parts() == 1, received


@pytest.mark.parametrize("lags_s", [(0.0, 3.0, 0.0), (2.0, 0.0, 0.0), (4.0, 4.0, 4.0), (0.0, 4.9, 4.9), (1.0, 1.0, 1.0)])
@pytest.mark.parametrize("answer_s", (3.0, 5.2, 8.0, 9.8, 12.0, 14.2))
@pytest.mark.parametrize("store_s", (0.3,))
@pytest.mark.parametrize("replicas", (1, 2))
def test_queued_deliveries_still_answer_exactly_once(tmp_path, lags_s, answer_s, store_s, replicas):
    service, received = run(tmp_path, answer_s, lags_s, store_s, replicas)
    assert len(received.passive) + service.pushed_first_parts() == 1, received


def test_a_reply_whose_handler_was_cancelled_after_writing_it_is_served_by_the_next_delivery(tmp_path):
    """The reply was counted as served, then WeChat hung up before it left the handler: the
    ingress retracts it, and WeChat's next delivery gets it."""
    service = Service(tmp_path, 1.0)

    async def scenario():
        clock, coordinator = service.clock, service.coordinator
        first = asyncio.ensure_future(coordinator.deliver(MESSAGE))
        await clock.advance(1.0)
        served = await first
        assert served.passive_reply and service.ledger.lookup(MESSAGE.dedupe_key).served
        await coordinator.retract(MESSAGE, served)  # the handler was cancelled before returning it
        assert not service.ledger.lookup(MESSAGE.dedupe_key).served
        await clock.advance(4.0)
        again = await coordinator.deliver(MESSAGE)
        await clock.advance(60)
        await coordinator.drain()
        return again

    again = asyncio.run(scenario())
    assert again.passive_reply and service.pushed_first_parts() == 0


def test_a_reply_the_last_delivery_could_not_get_out_is_pushed_once(tmp_path):
    service = Service(tmp_path, 11.0)

    async def scenario():
        clock, coordinator = service.clock, service.coordinator
        outcomes = []
        for at_s in (0.0, 5.0, 10.0):
            await clock.advance_to(START_S + at_s)
            delivering = asyncio.ensure_future(coordinator.deliver(MESSAGE))
            await clock.advance(4.5 if at_s < 10 else 1.5)
            outcomes.append(await delivering)
        await coordinator.retract(MESSAGE, outcomes[-1])  # cancelled after it had the reply
        await clock.advance(60)
        await coordinator.drain()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [outcome.kind for outcome in outcomes] == ["not_yet", "not_yet", "passive"] and outcomes[-1].last
    assert service.pushed_first_parts() == 1
    # a second retract (a retried callback) changes nothing
    asyncio.run(service.coordinator.retract(MESSAGE, outcomes[-1]))
    assert service.pushed_first_parts() == 1


@pytest.mark.parametrize("answer_s", (2.0, 4.8, 5.5, 9.0, 11.0, 14.0, 20.0))
def test_identical_retries_held_six_seconds_are_answered_exactly_once(tmp_path, answer_s):
    """WeChat's retry carries the very same request (timestamp, nonce, signature, MsgId), and
    here WeChat waits 6 s on each delivery, so a retry can arrive while the delivery before it
    is still being answered."""
    service = Service(tmp_path, answer_s)
    service.wechat = WeChat(service.clock, service.replicas, timeout_s=6.0)
    received = asyncio.run(service.send())
    assert len(received.passive) + service.pushed_first_parts() == 1, received
    assert service.answered == 1


def test_overlapping_deliveries_one_hung_up_keep_the_other_ones_serving(tmp_path):
    """Two deliveries of the message wait at once; both serve the reply, then the first one's
    client turns out to have gone. The second one's serving stands: nothing is pushed."""
    service = Service(tmp_path, 2.0)

    async def scenario():
        clock, coordinator = service.clock, service.coordinator
        first = asyncio.ensure_future(coordinator.deliver(MESSAGE))
        await clock.advance(0.5)
        second = asyncio.ensure_future(coordinator.deliver(MESSAGE))
        await clock.advance(1.5)
        one, two = await first, await second
        await coordinator.retract(MESSAGE, one)
        await clock.advance(60)
        await coordinator.drain()
        return one, two

    one, two = asyncio.run(scenario())
    assert one.passive_reply and two.passive_reply
    assert service.ledger.lookup(MESSAGE.dedupe_key).served and service.pushed_first_parts() == 0


def test_an_answer_ready_while_the_last_delivery_hands_off_is_pushed_once(tmp_path):
    """The job records its answer in the same instant the last delivery gives up waiting and
    hands the job off: whichever reaches the ledger first, the answer goes out once."""
    for answer_s in (13.5, 13.5 - 1e-9, 13.5 + 1e-9):
        service, received = run(tmp_path / str(answer_s), answer_s)
        assert len(received.passive) + service.pushed_first_parts() == 1, (answer_s, received)
        assert received.statuses[-1] in ("passive", "success")
