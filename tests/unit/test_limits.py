"""Rate limits: token buckets per user and per account, shared by replicas."""

from __future__ import annotations

import time

import pytest

from functions.common.clock import FixedClock
from functions.common.limits import LimitPolicy, RateLimiter
from functions.emulator.platform import reply_text, text_message_xml
from functions.common.records import InboundMessage
from functions.common.state import SQLiteStateStore
from functions.generate.deployment import GenerateServer
from tests.fakes import EchoEngine
from tests.unit.ingress_stack import make_client, post


def message(user: str, account: str = "default") -> InboundMessage:
    return InboundMessage(account, "gh", user, 1, "text", msg_id="1", content="q")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_000_000)


def limiter(tmp_path, clock, **policy) -> RateLimiter:
    return RateLimiter(SQLiteStateStore(tmp_path / "state.db", clock), clock, LimitPolicy(**policy))


def test_a_user_gets_a_burst_then_the_sustained_rate(tmp_path, clock):
    limits = limiter(tmp_path, clock, user_burst=3, user_per_min=6, account_burst=0)
    assert [limits.admit(message("o-a")).allowed for _ in range(4)] == [True, True, True, False]
    refused = limits.admit(message("o-a"))
    assert refused.scope == "user" and refused.retry_after_s == pytest.approx(10.0)
    assert limits.admit(message("o-b")).allowed  # another user has their own bucket
    clock.advance(10)
    assert limits.admit(message("o-a")).allowed and not limits.admit(message("o-a")).allowed


def test_the_account_limit_covers_all_its_users(tmp_path, clock):
    limits = limiter(tmp_path, clock, user_burst=0, account_burst=5, account_per_s=1)
    assert sum(limits.admit(message(f"o-{n}")).allowed for n in range(8)) == 5
    assert limits.admit(message("o-x")).scope == "account"
    assert limits.admit(message("o-x", account="other")).allowed


def test_two_ingress_replicas_share_one_users_limit(home):
    """Two ingress instances on one state store, a user alternating between them: the burst
    of three holds across both, and the rest get a friendly reply, not silence."""
    generate = GenerateServer(engine_cls=EchoEngine, settings_overrides={"home": str(home)})
    limits = {"user_burst": 3, "user_per_min": 0.01}
    replicas = [make_client(home, generate=generate, overrides=limits) for _ in range(2)]
    replies = []
    for n in range(6):
        xml = text_message_xml(to_user="gh", from_user="o-eager", content="退货政策是什么", msg_id=str(900 + n),
                               create_time=int(time.time()))
        replies.append(reply_text(post(replicas[n % 2], home, xml)[1]))
    assert sum(r.startswith("七天无理由退货") for r in replies) == 3
    assert replies[3:] == ["您发送得太快了，请稍等一会儿再问我。"] * 3
    assert len(generate._core._engine.calls) == 3  # limited messages cost no GPU time
