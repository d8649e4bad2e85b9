"""WeChat's deadlines through the real Serve app, driven by the emulator: every message is
answered exactly once, passively when the answer is quick enough, pushed when it is not."""

from __future__ import annotations

import asyncio

import pytest

from functions.common.emulator import UserMessage, run_burst

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


def test_a_burst_of_200_messages_from_50_users_is_answered_exactly_once(sleepy_service):
    """Two ingress replicas and a generator at 0.5 s an answer, as many at a time as
    deploy/local.yaml lets generate take; an answer that misses the passive window is
    pushed. None lost, none doubled."""
    report = asyncio.run(run_burst(sleepy_service.emulator, messages=200, users=50, seconds=10,
                                   text="你们的退货政策是什么？#0.5"))
    print("burst:", report)
    assert report["delivered"] == report["sent"] == 200, report
    assert report["duplicates"] == 0 and report["lost"] == 0, report


def test_a_delivery_whose_client_gives_up_does_not_cancel_the_job(sleepy_service):
    """WeChat hangs up on a slow delivery; Serve then cancels that request's downstream
    calls. The job must survive it: the next delivery gets the answer."""
    import time

    from functions.common.clock import SystemClock
    from functions.common.platform import PlatformSimulator, text_message_xml

    platform = PlatformSimulator(sleepy_service.account, SystemClock())
    xml = text_message_xml(to_user="gh", from_user="o-hangup", content="你们的退货政策是什么？#3",
                           msg_id="880001", create_time=int(time.time()))
    result = platform.deliver(f"{sleepy_service.base_url}/wechat/default", xml, timeout_s=1.0, interval_s=1.5, attempts=4)
    assert result.statuses[0] == "timeout", result  # the first delivery's client hung up
    assert result.outcome == "passive" and "7天无理由退货" in result.reply["Content"], result
