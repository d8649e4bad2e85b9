"""The push path over real HTTP: wechatpy's clients against the platform emulator, the
outbox and the token cache in a real SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from functions.common.clock import FixedClock, SystemClock
from functions.common.outbox import Outbox, OutboxItem, RetryPolicy
from functions.emulator.platform_api import RATE_LIMITED, BackgroundServer, PlatformState, platform_api_app
from functions.common.settings import AccountConfig, ensure_dev_credentials
from functions.common.state import SQLiteStateStore
from functions.push.core import PushWorker, SendAmbiguous, SendFailed
from functions.push.wechat_api import WeChatSender
from tests.net import free_port
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]

APPID, SECRET = "wx-emulated-app", "emulated-secret"
CORP, CORP_SECRET = "ww-emulated-corp", "corp-secret"
ACCOUNTS = {
    "default": AccountConfig(name="default", token="t", appid=APPID, secret=SECRET),
    "corp": AccountConfig(name="corp", kind="wecom", token="t", appid=CORP, secret=CORP_SECRET, agent_id=1000002),
}


@pytest.fixture
def platform():
    state = PlatformState({APPID: SECRET, CORP: CORP_SECRET})
    with BackgroundServer(platform_api_app(state), free_port()) as server:
        yield state, server.url


@pytest.fixture
def clock():
    return FixedClock(1_000_000)


@pytest.fixture
def store(tmp_path, clock):
    return SQLiteStateStore(tmp_path / "state.db", clock)


def worker(store, clock, api_base, sender=None) -> tuple[PushWorker, Outbox]:
    outbox = Outbox(store, clock, lease_s=30, retry=RetryPolicy(max_attempts=4, base_delay_s=2, max_delay_s=10))
    return PushWorker(outbox, sender or WeChatSender(ACCOUNTS, store, api_base), store), outbox


def answer(part: int, user: str = "o-user", account: str = "default") -> OutboxItem:
    return OutboxItem(f"job-1:{part}", account, user, f"第{part}段答案", created_s=1_000_000)


def test_pending_answers_are_pushed_once_with_one_shared_token(platform, store, clock):
    state, url = platform
    state.user_wrote(APPID, "o-user")
    push, outbox = worker(store, clock, url)
    for part in range(3):
        outbox.put(answer(part))
    outbox.put(answer(0))  # enqueued twice: still one message
    assert push.run_once().sent == 3
    assert state.received("o-user") == ["第0段答案", "第1段答案", "第2段答案"]
    second_replica, second_outbox = worker(store, clock, url)  # another replica, same store
    second_outbox.put(answer(9))
    assert second_replica.run_once().sent == 1
    assert state.tokens_issued == 1  # the token was shared through the state store


def test_an_expired_token_is_refreshed_and_the_send_goes_through(platform, store, clock):
    state, url = platform
    state.user_wrote(APPID, "o-user")
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0))
    push.run_once()
    state.expire_tokens()  # the platform answers 42001 now
    outbox.put(answer(1))
    assert push.run_once().sent == 1
    assert state.received("o-user") == ["第0段答案", "第1段答案"] and state.tokens_issued == 2


def test_rate_limits_are_retried_with_backoff(platform, store, clock):
    state, url = platform
    state.user_wrote(APPID, "o-user")
    state.fail_next(RATE_LIMITED, count=2)
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0))
    assert push.run_once().retried == 1
    clock.advance(2.1)
    assert push.run_once().retried == 1
    clock.advance(3.9)
    assert push.run_once().total() == 0  # still backing off (4 s)
    clock.advance(0.2)
    assert push.run_once().sent == 1
    assert state.received("o-user") == ["第0段答案"]


def test_outside_the_window_and_over_quota_are_dead_letters_not_retries(platform, store, clock):
    state, url = platform
    state.quota_per_window = 2
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0, user="o-silent"))  # never wrote to us: 45015
    state.user_wrote(APPID, "o-user")
    for part in range(1, 4):
        outbox.put(answer(part))
    stats = push.run_once()
    assert stats.sent == 2 and stats.undeliverable == 2
    assert outbox.backlog() == 0 and outbox.dead_letters() == 2
    clock.advance(10_000)
    assert push.run_once().total() == 0  # never retried


def test_wecom_apps_push_through_message_send(platform, store, clock):
    state, url = platform
    state.user_wrote(CORP, "zhangsan")
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0, user="zhangsan", account="corp"))
    assert push.run_once().sent == 1
    assert state.received("zhangsan") == ["第0段答案"]


class CrashAfterSending:
    """Delivers, then dies before the worker can acknowledge: the worst moment to crash."""

    def __init__(self, real: WeChatSender):
        self._real = real

    def send_text(self, account: str, to_user: str, text: str) -> None:
        self._real.send_text(account, to_user, text)
        raise KeyboardInterrupt("worker killed mid-send")


def test_a_worker_killed_mid_send_never_sends_twice(platform, store, clock):
    state, url = platform
    state.user_wrote(APPID, "o-user")
    crashing, outbox = worker(store, clock, url, sender=CrashAfterSending(WeChatSender(ACCOUNTS, store, url)))
    outbox.put(answer(0))
    outbox.put(answer(1))
    with pytest.raises(KeyboardInterrupt):
        crashing.run_once()
    restarted, _ = worker(store, clock, url)
    assert restarted.run_once().total() == 0  # part 1 still leased by the dead worker... 
    clock.advance(31)  # ...until the lease lapses
    stats = restarted.run_once()
    assert stats.sent == 1 and stats.not_resent == 1
    assert state.received("o-user") == ["第0段答案", "第1段答案"]  # each exactly once


class Unreachable:
    def __init__(self, error: Exception):
        self._error = error

    def send_text(self, account, to_user, text):
        raise self._error


def test_unreachable_is_retried_but_a_timeout_is_not_resent(store, clock):
    push, outbox = worker(store, clock, "http://127.0.0.1:9", sender=Unreachable(SendFailed("refused")))
    outbox.put(answer(0))
    assert push.run_once().retried == 1
    ambiguous, outbox2 = worker(store, clock, "http://127.0.0.1:9", sender=Unreachable(SendAmbiguous("timeout")))
    outbox2.put(answer(5))
    assert ambiguous.run_once().not_resent == 1


def test_a_closed_port_is_a_retryable_failure(store, clock):
    push, outbox = worker(store, clock, f"http://127.0.0.1:{free_port()}")
    outbox.put(answer(0))
    assert push.run_once().retried == 1


def test_a_connection_dropped_after_delivery_is_never_resent(platform, store, clock):
    state, url = platform
    state.user_wrote(APPID, "o-user")
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0))
    outbox.put(answer(1))
    state.drop_next(1, after_delivering=True)
    stats = push.run_once()
    assert stats.not_resent == 1 and stats.sent == 1
    clock.advance(600)
    assert push.run_once().total() == 0
    assert state.received("o-user") == ["第0段答案", "第1段答案"]  # the dropped one arrived, once
    assert outbox.dead_letters() == 1  # kept for operators: the sender could not know


def test_a_connection_dropped_before_delivery_is_a_dead_letter_not_a_guess(platform, store, clock):
    """The sender cannot tell this drop from the one above: resending would risk a duplicate."""
    state, url = platform
    state.user_wrote(APPID, "o-user")
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0))
    state.drop_next(1, after_delivering=False)
    assert push.run_once().not_resent == 1
    assert state.received("o-user") == [] and outbox.dead_letters() == 1 and outbox.backlog() == 0


def test_killing_the_push_worker_process_mid_send_delivers_each_answer_once(tmp_path):
    """The real push replica class in its own process, SIGKILLed while a send is on the wire;
    a restarted one finishes the outbox without resending the answer that was in flight."""
    credentials, _ = ensure_dev_credentials(tmp_path)
    state = PlatformState({credentials["appid"]: credentials["secret"]}, delay_s=1.0)
    state.user_wrote(credentials["appid"], "o-user")
    outbox = Outbox(SQLiteStateStore(tmp_path / "state.db"), SystemClock())
    for part in range(3):
        outbox.put(OutboxItem(f"job-9:{part}", "default", "o-user", f"第{part}段答案", created_s=time.time()))
    with BackgroundServer(platform_api_app(state), free_port()) as server:
        overrides = {"home": str(tmp_path), "wechat_api_base": server.url, "push_poll_s": 0.1, "push_lease_s": 2.0}
        code = "import json, sys, time\nfrom functions.push.deployment import PushServer\n" \
               "PushServer(json.loads(sys.argv[1]))\ntime.sleep(600)"
        command = [sys.executable, "-c", code, json.dumps(overrides)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        first = subprocess.Popen(command, cwd=REPO, env=env)
        try:
            wait_for(lambda: len(state.received("o-user")) == 1 and state.sends_in_flight == 1, timeout_s=60)
        finally:
            first.kill()  # SIGKILL: no cleanup, the lease and the attempt marker stay behind
            first.wait()
        restarted = subprocess.Popen(command, cwd=REPO, env=env)
        try:
            wait_for(lambda: len(state.received("o-user")) == 3, timeout_s=60)
            # Nothing left to send: a duplicate could only have come before this.
            wait_for(lambda: outbox.backlog() == 0 and outbox.dead_letters() == 1, timeout_s=60)
        finally:
            restarted.kill()
            restarted.wait()
    assert state.received("o-user") == ["第0段答案", "第1段答案", "第2段答案"]
    # The answer that was on the wire is recorded as "possibly sent, not resent" for operators.
    assert outbox.backlog() == 0 and outbox.dead_letters() == 1


def test_a_token_endpoint_that_times_out_is_retried_not_dead_lettered(platform, store, clock, monkeypatch):
    """wechatpy fetches the token inside the send call; a timeout there must not read as a
    send that may have gone out."""
    import functions.push.wechat_api as wechat_api

    state, url = platform
    state.user_wrote(APPID, "o-user")
    monkeypatch.setattr(wechat_api, "REQUEST_TIMEOUT_S", 0.3)
    push, outbox = worker(store, clock, url)
    outbox.put(answer(0))
    state.delay_s = 1.0
    stats = push.run_once()
    assert stats.retried == 1 and stats.not_resent == 0 and outbox.dead_letters() == 0
    state.delay_s = 0.0
    clock.advance(60)
    assert push.run_once().sent == 1 and state.received("o-user") == ["第0段答案"]
