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
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field

from functions.common.clock import Clock, SystemClock
from functions.emulator.platform import PlatformSimulator, reply_text, text_message_xml
from functions.emulator.platform_api import Delivered, PlatformState, platform_api_app
from functions.common.settings import AccountConfig

PUSH_POLL_S = 0.2
logger = logging.getLogger("wxassist.emulator")
# A question may carry a tag ("〔17〕") that its answer repeats (the burst's stand-in generator
# does): a pushed answer then names its message, which WeChat's push API does not.
MESSAGE_TAG = re.compile(r"〔[0-9A-Za-z-]{1,32}〕")


@dataclass(frozen=True)
class SentMessage:
    account: str
    user: str
    msg_id: str
    text: str
    at_s: float

    @property
    def tag(self) -> str:
        found = MESSAGE_TAG.search(self.text)
        return found.group(0) if found else ""


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
        self.sent: list[SentMessage] = []  # every message a user sent, in order
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    async def send(self, message: UserMessage) -> dict:
        account = self._accounts.get(message.account)
        if account is None:
            return {"error": f"no account named {message.account!r}"}
        sent_s = self._clock.now_s()
        self.api.user_wrote(account.appid, message.user)
        msg_id = str(next(self._msg_ids))
        self.sent.append(SentMessage(account.name, message.user, msg_id, message.text, sent_s))
        xml = text_message_xml(
            to_user=f"gh_{account.appid}", from_user=message.user, content=message.text,
            msg_id=msg_id, create_time=int(sent_s),
        )
        simulator = PlatformSimulator(account, self._clock)
        url = f"{self._callback_base}/wechat/{account.name}"
        result = await simulator.deliver_async(url, xml, safe_mode=message.safe_mode, client=self._client())
        if result.outcome == "passive":
            self.api.record_passive(account.appid, message.user, reply_text(result.reply), msg_id)
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


    def received_per_message(self) -> dict[str, list[Delivered]]:
        """What each message (by MsgId) brought its user. A passive reply names its message; a
        push is the message's whose tag it carries, or else the user's latest message before it."""
        by_message: dict[str, list[Delivered]] = {sent.msg_id: [] for sent in self.sent}
        sent_by_user: dict[str, list[SentMessage]] = {}
        for sent in self.sent:
            sent_by_user.setdefault(sent.user, []).append(sent)
        for delivered in list(self.api.delivered):
            if delivered.msg_id in by_message:
                by_message[delivered.msg_id].append(delivered)
                continue
            candidates = sent_by_user.get(delivered.to_user, [])
            tagged = [sent for sent in candidates if sent.tag and sent.tag in delivered.text]
            earlier = [sent for sent in candidates if sent.at_s <= delivered.at_s]
            owner = tagged[0] if tagged else (earlier[-1] if earlier else None)
            if owner is not None:
                by_message[owner.msg_id].append(delivered)
        return by_message

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
    settled: Callable[[], bool] | None = None,
) -> dict:
    """Send ``messages`` from ``users`` spread evenly over ``seconds`` and count, per message,
    the answers its user received: each must be answered exactly once.

    Every message carries its own tag (``〔n〕``), which a tag-echoing generator repeats, so
    an answer is matched to its message and never to the same user's other one. What a message
    brought that is not its answer (a "we'll send it" notice) is counted as a notice.
    ``settled``: true once the service has nothing left to send (its job journal and outbox
    are empty); a duplicate is looked for until then, else for a moment after the last answer.
    ``p50_s`` and ``p99_s`` are times from sending to the answer."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes: dict[str, int] = {}
    statuses: dict[str, int] = {}
    tagged: dict[str, str] = {}  # msg_id -> tag
    first_seen = len(emulator.sent)

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, started + index * seconds / messages - loop.time()))
        user = f"burst-user-{index % users}"
        tag = f"〔{index}〕"
        result = await emulator.send(UserMessage(user=user, text=f"{text}{tag}", account=account, wait_for_push_s=0))
        outcomes[result.get("outcome", "error")] = outcomes.get(result.get("outcome", "error"), 0) + 1
        trail = "/".join(result.get("statuses", []))
        statuses[trail] = statuses.get(trail, 0) + 1
        if "msg_id" in result:
            tagged[result["msg_id"]] = tag

    def answers() -> dict[str, list[Delivered]]:
        received = emulator.received_per_message()
        return {msg_id: [d for d in received.get(msg_id, []) if tag in d.text] for msg_id, tag in tagged.items()}

    await asyncio.gather(*(one(index) for index in range(messages)))
    deadline = loop.time() + settle_s
    while not all(answers().values()) and loop.time() < deadline:
        await asyncio.sleep(0.5)
    if settled is not None:
        while not settled() and loop.time() < deadline:
            await asyncio.sleep(0.5)
    else:
        await asyncio.sleep(2.0)  # a duplicate would arrive late: give it the chance to show up
    sent = {m.msg_id: m for m in emulator.sent[first_seen:]}
    received = emulator.received_per_message()
    got = answers()
    duplicates = sum(max(0, len(answer) - 1) for answer in got.values())
    lost = sum(not answer for answer in got.values())
    notices = sum(len(received.get(msg_id, [])) - len(answer) for msg_id, answer in got.items())
    latencies_s = sorted(answer[0].at_s - sent[msg_id].at_s for msg_id, answer in got.items() if answer)
    wrong = {msg_id: [(d.channel, d.text) for d in received.get(msg_id, [])] for msg_id, answer in got.items()
             if len(answer) != 1}

    def percentile(share: float) -> float:
        return round(latencies_s[min(len(latencies_s) - 1, int(share * len(latencies_s)))], 3) if latencies_s else 0.0

    log = logger.warning if wrong else logger.info
    log("burst outcomes %s, delivery trails %s, not answered exactly once: %s", outcomes, statuses, wrong)
    return {
        "sent": messages,
        "delivered": sum(bool(answer) for answer in got.values()),
        "duplicates": duplicates,
        "lost": lost,
        "notices": notices,
        "pushed": sum(answer[0].channel == "push" for answer in got.values() if answer),
        "passive_share": round(sum(answer[0].channel == "passive" for answer in got.values() if answer) / messages, 3),
        "p50_s": percentile(0.50),
        "p99_s": percentile(0.99),
        "trails": statuses,
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
