"""The outbox's rules on the SQLite store with a clock that moves only when told."""

from __future__ import annotations

import pytest

from functions.common.clock import FixedClock
from functions.common.outbox import DEAD_QUEUE, Outbox, OutboxItem, RetryPolicy
from functions.common.state import SQLiteStateStore


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_000)


@pytest.fixture
def store(tmp_path, clock):
    return SQLiteStateStore(tmp_path / "state.db", clock)


@pytest.fixture
def outbox(store, clock) -> Outbox:
    return Outbox(store, clock, lease_s=30, retry=RetryPolicy(max_attempts=3, base_delay_s=2, max_delay_s=5))


def item(part: int = 0) -> OutboxItem:
    return OutboxItem(f"job-1:{part}", "default", "o-user", f"第{part}段", created_s=1_000)


def test_an_answer_is_queued_once(outbox):
    assert outbox.put(item())
    assert not outbox.put(item())  # the same idempotency key
    assert outbox.backlog() == 1


def test_a_taken_item_is_hidden_until_sent_or_its_lease_lapses(outbox, clock):
    outbox.put(item())
    assert [i.item_id for i in outbox.take(10)] == ["job-1:0"]
    assert outbox.take(10) == []
    clock.advance(31)  # the worker died holding it
    again = outbox.take(10)
    assert [i.item_id for i in again] == ["job-1:0"]
    outbox.sent(again[0])
    clock.advance(1000)
    assert outbox.take(10) == [] and outbox.backlog() == 0


def test_failures_back_off_then_become_dead_letters(outbox, store, clock):
    outbox.put(item())
    first = outbox.take(1)[0]
    assert outbox.failed(first, "45009 rate limited")
    clock.advance(1.9)
    assert outbox.take(1) == []  # backing off for 2 s
    clock.advance(0.2)
    second = outbox.take(1)[0]
    assert second.attempts == 1 and second.last_error == "45009 rate limited"
    assert outbox.failed(second, "network")
    clock.advance(3.9)
    assert outbox.take(1) == []  # 4 s now
    clock.advance(0.2)
    third = outbox.take(1)[0]
    assert not outbox.failed(third, "network")  # third failure: out of attempts
    assert outbox.backlog() == 0 and outbox.dead_letters() == 1
    (_, payload), = store.lease(DEAD_QUEUE, now_s=2e18, lease_s=1, limit=5)
    assert "gave up after 3 attempts: network" in OutboxItem.from_json(payload).last_error


def test_undeliverable_items_keep_their_reason(outbox, store):
    outbox.put(item(1))
    taken = outbox.take(1)[0]
    outbox.undeliverable(taken, "45015 outside the 48-hour window")
    assert outbox.backlog() == 0 and outbox.dead_letters() == 1
    (_, payload), = store.lease(DEAD_QUEUE, now_s=2e18, lease_s=1, limit=5)
    assert OutboxItem.from_json(payload).last_error == "45015 outside the 48-hour window"


def test_backoff_is_capped():
    policy = RetryPolicy(base_delay_s=2, max_delay_s=300)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert policy.delay_s(20) == 300
