"""A passive-only account (an unverified Official Account, no customer-service API) through
the real Serve app: a slow answer is promised on the last delivery and fetched with "继续";
the question the user sends in between is answered as itself, not swallowed."""

from __future__ import annotations

import asyncio

import pytest

from functions.emulator.emulator import UserMessage
from functions.common.settings import Settings

pytestmark = pytest.mark.serve
TEXTS = Settings()


def send(service, user: str, text: str) -> dict:
    return asyncio.run(service.emulator.send(UserMessage(user=user, text=text, account="lite", wait_for_push_s=0)))


def shown(result: dict) -> list[str]:
    return [m["text"] for m in result["received"]]


def test_continue_with_nothing_held_says_so(sleepy_service):
    result = send(sleepy_service, "o-lite-empty", "继续")
    assert result["outcome"] == "passive" and shown(result) == [TEXTS.continue_empty_text], result


def test_a_slow_answer_is_fetched_with_continue_and_the_next_question_is_not_swallowed(sleepy_service):
    user = "o-lite-slow"
    slow = send(sleepy_service, user, "你们的退货政策是什么？#20")
    assert slow["deliveries"] == 3 and shown(slow) == [TEXTS.continue_pending_text], slow

    between = send(sleepy_service, user, "你们的退货政策是什么？#1")  # a real question, not a fetch
    assert between["outcome"] == "passive" and len(shown(between)) == 1, between
    assert "7天无理由退货" in shown(between)[0] and "接上条" not in shown(between)[0]

    fetched = send(sleepy_service, user, "继续")  # waits for the slow job inside its own windows
    assert fetched["outcome"] == "passive", fetched
    (text,) = shown(fetched)
    assert text.startswith("（接上条：你们的退货政策是什么？") and "7天无理由退货" in text, text

    again = send(sleepy_service, user, "继续")
    assert shown(again) == [TEXTS.continue_empty_text], again
    channels = [m.channel for m in sleepy_service.emulator.api.received_since(user, 0.0)]
    assert channels == ["passive"] * 4, "one reply per message, and a passive-only account never pushes"
