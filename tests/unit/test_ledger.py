"""The claim ledger's rules, on the SQLite store with a clock that only moves when told."""

from __future__ import annotations

import pytest

from functions.common.clock import FixedClock
from functions.common.ledger import ClaimLedger, ledger_key
from functions.common.records import Reply
from functions.common.state import SQLiteStateStore

KEY = ("default", "o-user", "24001")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_000_000)


@pytest.fixture
def ledger(tmp_path, clock) -> ClaimLedger:
    return ClaimLedger(SQLiteStateStore(tmp_path / "state.db", clock), clock, ttl_s=3600, job_lease_s=60)


def test_first_delivery_wins_and_retries_attach(ledger):
    first = ledger.claim(KEY, "job-1")
    retry = ledger.claim(KEY, "job-2")
    assert first.won and not retry.won
    assert retry.entry.job_id == "job-1" and retry.entry.state == "in_flight"


def test_a_finished_job_is_served_again(ledger):
    ledger.claim(KEY, "job-1")
    assert ledger.complete(KEY, "job-1", Reply("<xml>answer</xml>")).state == "done"
    late = ledger.claim(KEY, "job-3")
    assert not late.won and late.entry.state == "done" and late.entry.reply() == Reply("<xml>answer</xml>")


def test_a_dead_owner_is_taken_over_after_its_lease(ledger, clock):
    ledger.claim(KEY, "job-1")
    clock.advance(59)
    assert not ledger.claim(KEY, "job-2").won
    clock.advance(2)
    takeover = ledger.claim(KEY, "job-2")
    assert takeover.won and takeover.entry.job_id == "job-2"
    assert ledger.complete(KEY, "job-1", Reply("late")) is None  # the dead owner cannot overwrite
    assert ledger.complete(KEY, "job-2", Reply("fresh")).state == "done"
    assert ledger.lookup(KEY).reply_body == "fresh"


def test_entries_expire_after_the_ttl(ledger, clock):
    ledger.claim(KEY, "job-1")
    ledger.complete(KEY, "job-1", Reply("old"))
    clock.advance(3601)
    assert ledger.lookup(KEY) is None
    assert ledger.claim(KEY, "job-9").won


def test_messages_and_users_do_not_collide(ledger):
    assert ledger.claim(KEY, "a").won
    assert ledger.claim(("default", "o-user", "24002"), "b").won
    assert ledger.claim(("default", "o-other", "24001"), "c").won
    assert ledger.claim(("corp", "o-user", "24001"), "d").won


def test_keys_do_not_carry_the_user_id():
    assert "o-user" not in ledger_key(KEY) and ledger_key(KEY).startswith("wxa:ledger:default:")


def test_deliveries_are_counted_from_the_first_arrival(ledger, clock):
    first = ledger.claim(KEY, "job-1")
    clock.advance(5)
    second = ledger.claim(KEY, "job-2")
    clock.advance(5)
    third = ledger.claim(KEY, "job-3")
    assert (first.entry.deliveries, second.entry.deliveries, third.entry.deliveries) == (1, 2, 3)
    assert third.entry.first_seen_s == first.entry.first_seen_s == 1_000_000


def test_a_handed_off_job_is_pushed_not_served(ledger):
    ledger.claim(KEY, "job-1")
    assert ledger.hand_off(KEY).handoff
    finished = ledger.complete(KEY, "job-1", Reply("<xml>answer</xml>"))
    assert finished.state == "pushed" and finished.reply_body == ""
    assert not ledger.claim(KEY, "job-2").won  # a late retry finds it pushed, not redone


def test_hand_off_loses_to_a_job_that_already_finished(ledger):
    ledger.claim(KEY, "job-1")
    ledger.complete(KEY, "job-1", Reply("<xml>answer</xml>"))
    entry = ledger.hand_off(KEY)
    assert entry.state == "done" and not entry.handoff  # serve the passive reply instead


def test_an_unserved_reply_is_switched_to_pushed_and_a_served_one_is_not(ledger):
    ledger.claim(KEY, "job-1")
    ledger.complete(KEY, "job-1", Reply("<xml>answer</xml>"))
    assert ledger.push_unserved(KEY, "job-1")  # no delivery carried it
    assert ledger.mark_served(KEY).state == "pushed"  # a straggler must answer success now
    other = ("default", "o-user", "24009")
    ledger.claim(other, "job-2")
    ledger.complete(other, "job-2", Reply("<xml>answer</xml>"))
    assert ledger.mark_served(other).served
    assert not ledger.push_unserved(other, "job-2")
    assert ledger.lookup(other).state == "done"


def test_a_live_owner_keeps_its_job_and_a_dead_one_loses_it_when_the_lease_lapses(tmp_path):
    clock = FixedClock(1_000_000)
    ledger = ClaimLedger(SQLiteStateStore(tmp_path / "state.db", clock), clock, ttl_s=3600, job_lease_s=6)
    key = ("default", "o-user", "77")
    assert ledger.claim(key, "job-a").won
    clock.advance(4)
    assert ledger.renew(key, "job-a")  # alive at 4 s: leased until 10 s
    clock.advance(5)
    assert not ledger.claim(key, "job-b").won  # 9 s: a retry attaches, it does not take over
    clock.advance(2)  # 11 s: no renewal since 4 s
    taken = ledger.claim(key, "job-c")
    assert taken.won and taken.entry.job_id == "job-c"
    assert not ledger.renew(key, "job-a")  # the old owner, if it wakes, stops renewing


def test_a_step_whose_answer_was_lost_is_repeated_without_harm(tmp_path):
    """A store that applied a write but dropped the reply: the caller tries again."""
    clock = FixedClock(1_000_000)
    ledger = ClaimLedger(SQLiteStateStore(tmp_path / "state.db", clock), clock, ttl_s=3600, job_lease_s=6)
    key = ("default", "o-user", "78")
    assert ledger.claim(key, "job-a").won and ledger.claim(key, "job-a").won  # still ours, not a retry
    assert ledger.lookup(key).deliveries == 1
    reply = Reply("<xml/>", parts=("一", "二"))
    assert ledger.complete(key, "job-a", reply).state == "done"
    assert ledger.complete(key, "job-a", reply).parts == ("一", "二")  # recorded already: the same entry
    clock.advance(30)
    assert ledger.push_unserved(key, "job-a") and not ledger.push_unserved(key, "job-a")  # one caller pushes


def test_recovering_an_answered_job_keeps_its_id_and_only_one_recovery_wins(tmp_path):
    clock = FixedClock(1_000_000)
    ledger = ClaimLedger(SQLiteStateStore(tmp_path / "state.db", clock), clock, ttl_s=3600, job_lease_s=6)
    key = ("default", "o-user", "79")
    ledger.claim(key, "job-a")
    ledger.complete(key, "job-a", Reply("<xml/>", parts=("一",)))
    assert ledger.take_over(key, "recovery-1") is None  # its owner's lease is still running
    clock.advance(7)
    taken = ledger.take_over(key, "recovery-1")
    assert taken.job_id == "job-a"  # the outbox item ids its owner used stay valid
    assert ledger.take_over(key, "recovery-2") is None
