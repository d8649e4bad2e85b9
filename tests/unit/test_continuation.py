"""passive-only accounts: held answers, "继续", and never swallowing the next question."""

from __future__ import annotations

import asyncio

import pytest

from functions.common.clock import FixedClock, ManualClock
from functions.common.continuation import (
    MAX_HELD_ANSWERS,
    ContinuationStore,
    NextPart,
    continued_text,
    hint_reserve_bytes,
    is_continue_request,
)
from functions.ingress.delivery import DeliveryCoordinator, DeliveryPolicy
from functions.ingress.overflow import HeldOverflow
from functions.common.ledger import ClaimLedger
from functions.common.records import InboundMessage, Reply
from functions.common.state import SQLiteStateStore
from tests.fakes import inline

HINT = "（内容较长，回复“继续”查看后续）"


def text(content: str, msg_id: str = "1", user: str = "o-user") -> InboundMessage:
    return InboundMessage("default", "gh", user, 1, "text", msg_id=msg_id, content=content)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_000_000)


@pytest.fixture
def store(tmp_path, clock):
    return SQLiteStateStore(tmp_path / "state.db", clock)


@pytest.fixture
def held(store, clock) -> ContinuationStore:
    return ContinuationStore(store, clock, ttl_s=86400, pending_stale_s=120)


@pytest.mark.parametrize("content", ["继续", " 继续 ", "继续。", "继续！", "继 续", "「继续」"])
def test_the_keyword_alone_asks_for_the_rest(content):
    assert is_continue_request(text(content), "继续")


@pytest.mark.parametrize("content", ["继续说说退货", "继续。另外运费多少？", "不继续", "", "续"])
def test_anything_else_is_a_question_of_its_own(content):
    assert not is_continue_request(text(content), "继续")


def test_full_width_letters_match_a_latin_keyword():
    assert is_continue_request(text("ＭＯＲＥ"), "more")
    assert not is_continue_request(InboundMessage("default", "gh", "u", 1, "event", event="CLICK", event_key="继续"), "继续")


def test_held_parts_come_back_in_order_with_what_is_left(held):
    question = text("退货政策是什么？请详细说明所有条款")
    held.hold(question, "job-1", ("第二段。", "第三段。"))
    first = held.take(text("继续", "2"))
    assert first == NextPart("part", "第二段。", "退货政策是什么？请详细…", remaining=1)
    assert held.take(text("继续", "3")) == NextPart("part", "第三段。", "退货政策是什么？请详细…", remaining=0)
    assert held.take(text("继续", "4")).kind == "none"


def test_the_most_recent_answer_is_continued_first_and_each_part_is_labelled(held):
    held.hold(text("退货？", "1"), "job-1", ("退货的后续。",))
    held.hold(text("运费？", "2"), "job-2", ("运费的后续。",))
    parts = [held.take(text("继续", str(n))) for n in range(3, 6)]
    assert [(p.label, p.text) for p in parts[:2]] == [("运费？", "运费的后续。"), ("退货？", "退货的后续。")]
    assert parts[2].kind == "none"


def test_a_pending_mark_waits_for_the_job_in_either_order(held):
    question = text("很慢的问题")
    held.expect(question, "job-1")
    assert held.take(text("继续", "2")) == NextPart("pending", label="很慢的问题")
    held.hold(question, "job-1", ("完整答案。",))
    held.expect(question, "job-1")  # a late expect must not turn the answer back into a promise
    assert held.take(text("继续", "3")).text == "完整答案。"


def test_a_job_that_had_nothing_to_say_clears_its_pending_mark(held):
    held.expect(text("？"), "job-1")
    held.hold(text("？"), "job-1", ())
    assert held.take(text("继续", "2")).kind == "none"


def test_a_pending_mark_whose_job_died_stops_blocking(held, clock):
    held.hold(text("旧问题", "1"), "job-1", ("旧答案。",))
    held.expect(text("新问题", "2"), "job-2")
    clock.advance(121)
    assert held.take(text("继续", "3")).text == "旧答案。"


def test_one_user_cannot_make_the_store_keep_without_bound(held):
    for n in range(MAX_HELD_ANSWERS + 3):
        held.hold(text(f"问题{n}", str(n)), f"job-{n}", ("后续。",))
    labels = [answer.label for answer in held.held(text("继续"))]
    assert labels == [f"问题{n}" for n in range(3, MAX_HELD_ANSWERS + 3)]


def test_users_do_not_see_each_others_answers_and_ids_stay_out_of_keys(held, store):
    held.hold(text("退货？", user="o-alice"), "job-1", ("Alice 的后续。",))
    assert held.take(text("继续", "2", user="o-bob")).kind == "none"
    assert held.take(text("继续", "3", user="o-alice")).text == "Alice 的后续。"
    rows = store._db.execute("SELECT key FROM state").fetchall()
    assert rows and all("o-alice" not in key for (key,) in rows)


def test_continued_text_names_the_question_and_hints_only_when_more_follow():
    assert continued_text(NextPart("part", "正文。", "退货？", remaining=1), HINT) == f"（接上条：退货？）\n正文。\n\n{HINT}"
    assert continued_text(NextPart("part", "正文。", "退货？", remaining=0), HINT) == "（接上条：退货？）\n正文。"
    longest = continued_text(NextPart("part", "", "问" * 12 + "…", remaining=1), HINT)
    assert len(longest.encode()) <= hint_reserve_bytes(HINT)


# ---- the coordinator with a passive-only account ------------------------------------------


@pytest.fixture
def timed(tmp_path):
    """A ManualClock, and a store and continuation store on it: for the delivery engine."""
    clock = ManualClock(1_000_000)
    store = SQLiteStateStore(tmp_path / "timed.db", clock)
    return clock, store, ContinuationStore(store, clock, ttl_s=86400, pending_stale_s=120)


def test_a_slow_answer_is_promised_on_the_last_delivery_then_held_whole(timed):
    clock, store, held = timed
    ledger = ClaimLedger(store, clock, ttl_s=3600, job_lease_s=60)
    release = asyncio.Event()

    async def answer(message, budget, deadline_s=None):
        if message.content == "慢问题":
            await release.wait()
            return Reply("<xml>slow</xml>", parts=("慢答案第一段。", "慢答案第二段。"))
        return Reply("<xml>fast</xml>", parts=("快答案。",))

    async def promise(message):
        return Reply("<xml>promise</xml>", parts=("答案还在准备中",))

    overflow = HeldOverflow(held, promise, blocking=inline)
    delivering = DeliveryCoordinator(ledger, lambda account: overflow, DeliveryPolicy(), clock, answer,
                                     max_new_tokens=64, blocking=inline)
    slow, next_question = text("慢问题", "1"), text("快问题", "2")

    async def scenario():
        outcomes = []
        for _ in range(3):
            delivery = asyncio.ensure_future(delivering.deliver(slow))
            await clock.advance(5)
            outcomes.append(await delivery)
        after = await delivering.deliver(next_question)  # a real question, answered as itself
        release.set()
        await clock.advance(20)  # past the last window, so the served answer's fallback check ends
        await delivering.drain()
        return outcomes, after

    outcomes, after = asyncio.run(scenario())
    assert [o.kind for o in outcomes] == ["not_yet", "not_yet", "passive"]
    assert outcomes[2].reply.body == "<xml>promise</xml>"
    assert after.kind == "passive" and after.reply.body == "<xml>fast</xml>"
    assert held.take(text("继续", "3")) == NextPart("part", "慢答案第一段。", "慢问题", remaining=1)
    assert held.take(text("继续", "4")).text == "慢答案第二段。"


def test_a_long_answer_served_passively_holds_only_the_later_parts(timed):
    clock, store, held = timed
    ledger = ClaimLedger(store, clock, ttl_s=3600, job_lease_s=60)

    async def answer(message, budget, deadline_s=None):
        return Reply("<xml>first</xml>", parts=("第一段。", "第二段。"))

    async def promise(message):
        raise AssertionError("nothing was handed off")

    overflow = HeldOverflow(held, promise, blocking=inline)
    delivering = DeliveryCoordinator(ledger, lambda account: overflow, DeliveryPolicy(), clock, answer,
                                     max_new_tokens=64, blocking=inline)

    async def scenario():
        outcome = await delivering.deliver(text("长问题"))
        await clock.advance(20)
        await delivering.drain()
        return outcome

    assert asyncio.run(scenario()).reply.body == "<xml>first</xml>"
    assert [(a.parts, a.pending) for a in held.held(text("继续"))] == [(("第二段。",), False)]


def test_labels_fit_their_reserve_even_in_four_byte_characters():
    from functions.common.continuation import LABEL_BYTES, question_label

    for content in ["😀" * 20, "𠀀" * 20, "退货" * 20, "a" * 40]:
        label = question_label(text(content))
        assert len(label.encode("utf-8")) <= LABEL_BYTES and label.endswith("…")


def test_a_held_continue_reply_is_not_labelled_twice():
    already = NextPart("part", "（接上条：退货？）\n正文。\n\n" + HINT, "继续", remaining=1)
    assert continued_text(already, HINT) == already.text
