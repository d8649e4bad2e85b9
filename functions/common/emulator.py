"""The WeChat emulator: both sides of the platform, for development, `wxassist chat` and tests.

A user "sends" a message; the emulator delivers it to the service's callback URL exactly as
WeChat does (signed and encrypted, 5 s per delivery, up to three deliveries), shows the user
the passive reply if one came, and otherwise waits for the answer to arrive through its own
customer-service API (``platform_api``). Everything a user receives is recorded, with the
channel it came by, so "exactly once" can be counted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Mapping

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field

from functions.common.clock import Clock, SystemClock
from functions.common.platform import PlatformSimulator, reply_text, text_message_xml
from functions.common.platform_api import PlatformState, platform_api_app
from functions.common.settings import AccountConfig

PUSH_POLL_S = 0.2
logger = logging.getLogger("wxassist.emulator")


class UserMessage(BaseModel):
    user: str
    text: str
    account: str = "default"
    safe_mode: bool = True
    wait_for_push_s: float = 30.0  # after "success": how long the user waits for the answer


class Fault(BaseModel):
    errcode: int | None = None  # the next `count` customer-service sends fail with this code
    count: int = Field(1, ge=1, le=10_000)
    delay_s: float | None = Field(None, ge=0, le=60)  # every API response is this slow
    drop: int = Field(0, ge=0, le=10_000)  # the next `drop` sends lose their connection mid-response...
    drop_after_delivering: bool = True  # ...after the platform delivered the message, or before


class WeChatEmulator:
    def __init__(self, accounts: Mapping[str, AccountConfig], callback_base: str, clock: Clock | None = None):
        self._accounts = dict(accounts)
        self._callback_base = callback_base.rstrip("/")
        self._clock = clock or SystemClock()
        self.api = PlatformState(
            {a.appid: a.secret.get_secret_value() for a in self._accounts.values() if a.secret is not None},
            clock=self._clock,
        )
        self._msg_ids = itertools.count(secrets.randbelow(10**12) * 1000)
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    async def send(self, message: UserMessage) -> dict:
        account = self._accounts.get(message.account)
        if account is None:
            return {"error": f"no account named {message.account!r}"}
        sent_s = self._clock.now_s()
        self.api.user_wrote(account.appid, message.user)
        msg_id = str(next(self._msg_ids))
        xml = text_message_xml(
            to_user=f"gh_{account.appid}", from_user=message.user, content=message.text,
            msg_id=msg_id, create_time=int(sent_s),
        )
        simulator = PlatformSimulator(account, self._clock)
        url = f"{self._callback_base}/wechat/{account.name}"
        result = await simulator.deliver_async(url, xml, safe_mode=message.safe_mode, client=self._client())
        if result.outcome == "passive":
            self.api.record_passive(account.appid, message.user, reply_text(result.reply))
        elif result.outcome == "no_reply":  # "success": the answer, if any, comes by push
            deadline_s = time.monotonic() + message.wait_for_push_s
            while not self.api.received_since(message.user, sent_s) and time.monotonic() < deadline_s:
                await asyncio.sleep(PUSH_POLL_S)
        received = self.api.received_since(message.user, sent_s)
        return {
            "msg_id": msg_id,  # what `wxassist trace` takes
            "outcome": result.outcome,
            "deliveries": result.attempts,
            "statuses": list(result.statuses),
            "received": [{"text": m.text, "channel": m.channel, "after_s": round(m.at_s - sent_s, 3)} for m in received],
            "elapsed_s": round(self._clock.now_s() - sent_s, 3),
        }


    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop: a burst of users must not open a socket each."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=500, max_keepalive_connections=100))
            self._http_loop = loop
        return self._http


async def run_burst(
    emulator: WeChatEmulator,
    *,
    messages: int = 200,
    users: int = 50,
    seconds: float = 10.0,
    text: str = "你们的退货政策是什么？",
    account: str = "default",
    settle_s: float = 90.0,
) -> dict:
    """Send ``messages`` from ``users`` spread evenly over ``seconds``, wait for pushes to
    settle, and count what users received: every message must be answered exactly once.

    Answers are matched to messages per user, first come first served; ``p50_s`` and
    ``p99_s`` are times from sending to receiving."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent_at: dict[str, list[float]] = {}
    outcomes: dict[str, int] = {}
    statuses: dict[str, int] = {}

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, started + index * seconds / messages - loop.time()))
        user = f"burst-user-{index % users}"
        sent_at.setdefault(user, []).append(emulator.api.clock.now_s())
        result = await emulator.send(UserMessage(user=user, text=text, account=account, wait_for_push_s=0))
        outcomes[result.get("outcome", "error")] = outcomes.get(result.get("outcome", "error"), 0) + 1
        trail = "/".join(result.get("statuses", []))
        statuses[trail] = statuses.get(trail, 0) + 1

    await asyncio.gather(*(one(index) for index in range(messages)))
    deadline = loop.time() + settle_s
    while sum(len(emulator.api.received_since(user, times[0])) for user, times in sent_at.items()) < messages:
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # a duplicate would arrive late: give it the chance to show up
    delivered = duplicates = lost = 0
    latencies_s: list[float] = []
    for user, times in sent_at.items():
        received = sorted(m.at_s for m in emulator.api.received_since(user, times[0]))
        delivered += min(len(received), len(times))
        duplicates += max(0, len(received) - len(times))
        lost += max(0, len(times) - len(received))
        latencies_s.extend(got - sent for sent, got in zip(sorted(times), received))
    latencies_s.sort()

    def percentile(share: float) -> float:
        return round(latencies_s[min(len(latencies_s) - 1, int(share * len(latencies_s)))], 3) if latencies_s else 0.0

    log = logger.warning if delivered != messages or duplicates else logger.info
    log("burst outcomes %s, delivery trails %s", outcomes, statuses)
    return {
        "sent": messages,
        "delivered": delivered,
        "duplicates": duplicates,
        "lost": lost,
        "passive_share": round(outcomes.get("passive", 0) / messages, 3),
        "p50_s": percentile(0.50),
        "p99_s": percentile(0.99),
    }


def emulator_app(emulator: WeChatEmulator) -> FastAPI:
    """The platform's API (``/cgi-bin/…``) plus the emulator's own controls (``/_emulator/…``)."""
    app = platform_api_app(emulator.api)

    @app.post("/_emulator/messages")
    async def send(message: UserMessage) -> dict:
        return await emulator.send(message)

    @app.get("/_emulator/inbox")
    async def inbox(user: str) -> dict:
        return {"user": user, "received": [{"text": m.text, "channel": m.channel, "at_s": m.at_s}
                                           for m in emulator.api.received_since(user, 0.0)]}

    @app.post("/_emulator/faults")
    async def faults(fault: Fault) -> dict:
        if fault.errcode is not None:
            emulator.api.fail_next(fault.errcode, fault.count)
        if fault.delay_s is not None:
            emulator.api.delay_s = fault.delay_s
        if fault.drop:
            emulator.api.drop_next(fault.drop, after_delivering=fault.drop_after_delivering)
        return {"ok": True}

    return app
