"""A burst five times generate's configured queue, through the real Serve app and the WeChat
emulator: the overflow gets a friendly "answer coming" notice instead of an error, and every
user still receives the answer exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest

from functions.emulator.emulator import UserMessage
from functions.common.settings import Settings
from tests.serve.conftest import CROWDED_GENERATE_QUEUE

pytestmark = pytest.mark.serve

ANSWER = "青禾家居支持7天无理由退货"


def test_a_burst_past_the_generate_queue_gets_deferred_answers_delivered_once(crowded_service):
    users = [f"o-crowd-{index}" for index in range(5 * CROWDED_GENERATE_QUEUE)]  # 5x the queue, as the issue asks

    async def burst():
        return await asyncio.gather(*(
            crowded_service.emulator.send(UserMessage(user=user, text="你们的退货政策是什么？#2", wait_for_push_s=0))
            for user in users
        ))

    results = asyncio.run(burst())
    statuses = [status for result in results for status in result["statuses"]]
    assert not [s for s in statuses if s.startswith("5") and s != "503"], statuses  # 503 only means "deliver again"
    busy = Settings().busy_push_text
    notified = [user for user, result in zip(users, results, strict=True)
                if [m["text"] for m in result["received"]][:1] == [busy]]
    assert notified, "nothing was deferred: the burst did not fill the queue"
    api = crowded_service.emulator.api
    deadline = time.monotonic() + 120
    while any(sum(ANSWER in text for text in api.received(user)) < 1 for user in users):
        assert time.monotonic() < deadline, {user: api.received(user) for user in users}
        time.sleep(0.5)
    time.sleep(2.0)  # a duplicate would arrive late: give it the chance to show up
    for user in users:
        received = api.received(user)
        assert sum(ANSWER in text for text in received) == 1, (user, received)  # the answer, exactly once
        assert set(received) <= {busy} | {text for text in received if ANSWER in text}, (user, received)
