"""WeChat's deadlines through the real Serve app, driven by the emulator: every message is
answered exactly once, passively when the answer is quick enough, pushed when it is not."""

from __future__ import annotations

import asyncio

import pytest

from functions.emulator.emulator import UserMessage, run_burst
from tests.serve.conftest import run_sleepy_app

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


@pytest.fixture(scope="module")
def burst_service(service, tmp_path_factory):
    """`wxassist bench burst`'s application: two ingress replicas, generate 4 at a time, the
    bench's settings over deploy/local.yaml. One difference: intent's kNN step is off (as in the
    other deadline applications). Here the burst shares 2 cores with the session's other
    applications, and embedding every question with MiniLM on top starved the deliveries."""
    from functions.cli.bench import BURST_GENERATE_CONCURRENCY, BURST_INGRESS_REPLICAS, BURST_SETTINGS

    yield from run_sleepy_app(service, tmp_path_factory, "burst", {"max_ongoing_requests": BURST_GENERATE_CONCURRENCY},
                              replicas={"ingress": BURST_INGRESS_REPLICAS},
                              app_args={**BURST_SETTINGS, "user_burst": 10, "account_burst": 500})


def test_a_burst_of_200_messages_from_50_users_is_answered_exactly_once(burst_service):
    """The bench's burst: the generator's queue outgrows the passive window, so later
    answers are deferred or pushed. Counted per message (each carries its own tag, which the
    answer repeats): none lost, none answered twice."""
    from functions.common.settings import Settings
    from functions.cli.bench import BURST_ANSWER_S, nothing_left_to_send

    report = asyncio.run(run_burst(burst_service.emulator, messages=200, users=50, seconds=10,
                                   text=f"你们的退货政策是什么？#{BURST_ANSWER_S}",
                                   settled=nothing_left_to_send(Settings(home=burst_service.home))))
    print("burst:", report)
    assert report["delivered"] == report["sent"] == 200, report
    assert report["duplicates"] == 0 and report["lost"] == 0, report


def test_a_delivery_whose_client_gives_up_does_not_cancel_the_job(sleepy_service):
    """WeChat hangs up on a slow delivery; Serve then cancels that request's downstream
    calls. The job must survive it: the next delivery gets the answer."""
    import time

    from functions.common.clock import SystemClock
    from functions.emulator.platform import PlatformSimulator, text_message_xml

    platform = PlatformSimulator(sleepy_service.account, SystemClock())
    xml = text_message_xml(to_user="gh", from_user="o-hangup", content="你们的退货政策是什么？#3",
                           msg_id="880001", create_time=int(time.time()))
    result = platform.deliver(f"{sleepy_service.base_url}/wechat/default", xml, timeout_s=1.0, interval_s=1.5, attempts=4)
    assert result.statuses[0] == "timeout", result  # the first delivery's client hung up
    assert result.outcome == "passive" and "7天无理由退货" in result.reply["Content"], result


def test_identical_retries_held_six_seconds_are_each_answered_exactly_once(sleepy_service):
    """WeChat's retries carry the very same request (timestamp, nonce, signature, MsgId) and
    here each is held up to 6 s, past our 4.5 s window. Twenty messages whose answers are
    ready around every window's edge, each answered once: passively or pushed."""
    import time

    from functions.common.clock import SystemClock
    from functions.emulator.emulator import SentMessage
    from functions.emulator.platform import PlatformSimulator, reply_text, text_message_xml

    emulator, account = sleepy_service.emulator, sleepy_service.account
    platform = PlatformSimulator(account, SystemClock())
    paces = (0.5, 4.2, 4.6, 5.2, 8.0, 9.3, 9.7, 10.3, 12.0, 13.3, 13.7, 14.3, 14.7, 15.3, 16.0, 3.0, 6.5, 11.0, 13.5,
             18.0)

    async def one(index: int, pace_s: float) -> None:
        user, msg_id, tag = f"o-identical-{index}", str(770000 + index), f"〔{index}〕"
        content = f"你们的退货政策是什么？#{pace_s}{tag}"
        emulator.api.user_wrote(account.appid, user)
        emulator.sent.append(SentMessage(account.name, user, msg_id, content, time.time()))
        xml = text_message_xml(to_user="gh", from_user=user, content=content, msg_id=msg_id,
                               create_time=int(time.time()))
        result = await platform.deliver_async(f"{sleepy_service.base_url}/wechat/default", xml, timeout_s=6.0)
        if result.outcome == "passive":
            emulator.api.record_passive(account.appid, user, reply_text(result.reply), msg_id)

    async def all_of_them() -> None:
        await asyncio.gather(*(one(index, pace) for index, pace in enumerate(paces)))

    asyncio.run(all_of_them())
    tags = {str(770000 + index): f"〔{index}〕" for index in range(len(paces))}

    def answers() -> dict[str, int]:
        received = emulator.received_per_message()
        return {msg_id: sum(tag in d.text for d in received[msg_id]) for msg_id, tag in tags.items()}

    from tests.polling import wait_for

    wait_for(lambda: all(answers().values()), 60, "every message answered", 0.5)
    from functions.common.settings import Settings
    from functions.cli.bench import nothing_left_to_send

    wait_for(nothing_left_to_send(Settings(home=sleepy_service.home)), 60, "nothing left to send", 0.5)
    assert set(answers().values()) == {1}, answers()
