"""WeChat's deadlines through the real Serve app, driven by the emulator: every message is
answered exactly once, passively when the answer is quick enough, pushed when it is not."""

from __future__ import annotations

import asyncio

import pytest

from functions.common.emulator import UserMessage

pytestmark = pytest.mark.serve


def send(service, user: str, text: str):
    return asyncio.run(service.emulator.send(UserMessage(user=user, text=text, wait_for_push_s=45)))


def test_a_two_second_answer_is_always_passive(sleepy_service):
    for index in range(3):
        result = send(sleepy_service, f"o-quick-{index}", "你们的退货政策是什么？#2")
        assert result["outcome"] == "passive" and result["deliveries"] == 1, result
        assert [m["channel"] for m in result["received"]] == ["passive"]
        assert "7天无理由退货" in result["received"][0]["text"]


def test_a_twelve_second_answer_arrives_exactly_once(sleepy_service):
    result = send(sleepy_service, "o-patient", "你们的退货政策是什么？#12")
    assert len(result["received"]) == 1, result  # passive on the third delivery, or pushed
    assert "7天无理由退货" in result["received"][0]["text"]
    assert sleepy_service.emulator.api.received("o-patient") == [result["received"][0]["text"]]


def test_a_thirty_second_answer_is_pushed_exactly_once(sleepy_service):
    result = send(sleepy_service, "o-slow", "你们的退货政策是什么？#30")
    assert result["outcome"] == "no_reply" and result["deliveries"] == 3, result
    assert [m["channel"] for m in result["received"]] == ["push"]
    assert "7天无理由退货" in result["received"][0]["text"]
    assert len(sleepy_service.emulator.api.received("o-slow")) == 1
