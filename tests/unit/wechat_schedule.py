"""WeChat's side of the delivery protocol on a ManualClock, for deterministic race tests.

``WeChat.send`` plays the platform for one message: a delivery every ``interval_s`` from the
first, each waited on for ``timeout_s``; a delivery still unanswered then is hung up on (its
handler is cancelled: the coordinator sees ``hung_up``, and a passive reply the handler
produced afterwards is retracted, as the ingress does). A delivery can reach the service
late (``lag_s``: a proxy queue) and, like a real retry, carries the same MsgId. With several
coordinators (ingress replicas), delivery n goes to replica n mod their number.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from functions.common.clock import ManualClock
from functions.common.records import Outcome
from functions.ingress.delivery import DeliveryCoordinator
from functions.common.records import InboundMessage


@dataclass
class Received:
    statuses: list[str] = field(default_factory=list)  # per delivery: passive, success, 503, timeout
    passive: list[str] = field(default_factory=list)  # the reply bodies WeChat got in time


class WeChat:
    def __init__(self, clock: ManualClock, replicas: list[DeliveryCoordinator], *, timeout_s: float = 5.0,
                 interval_s: float = 5.0, attempts: int = 3):
        self._clock = clock
        self._replicas = replicas
        self._timeout_s = timeout_s
        self._interval_s = interval_s
        self._attempts = attempts
        self._late: set[asyncio.Task] = set()

    async def send(self, message: InboundMessage, lags_s: tuple[float, ...] = ()) -> Received:
        received = Received()
        first_s = self._clock.now_s()
        for attempt in range(self._attempts):
            await self._clock.sleep(first_s + attempt * self._interval_s - self._clock.now_s())
            replica = self._replicas[attempt % len(self._replicas)]
            status = await self._deliver(replica, message, lags_s[attempt] if attempt < len(lags_s) else 0.0, received)
            received.statuses.append(status)
            if status in ("passive", "success"):
                break
        return received

    async def _deliver(self, replica: DeliveryCoordinator, message: InboundMessage, lag_s: float,
                       received: Received) -> str:
        sent_s = self._clock.now_s()
        hung_up = asyncio.Event()

        async def handler() -> Outcome:
            await self._clock.sleep(lag_s)  # queued before the ingress saw it
            return await replica.deliver(message, arrived_s=self._clock.now_s(), hung_up=hung_up)

        handling = asyncio.ensure_future(handler())
        timer = asyncio.ensure_future(self._clock.sleep(sent_s + self._timeout_s - self._clock.now_s()))
        await asyncio.wait({handling, timer}, return_when=asyncio.FIRST_COMPLETED)
        if handling.done():
            timer.cancel()
            outcome = handling.result()
            if outcome.passive_reply:
                received.passive.append(outcome.reply.body)
                return "passive"
            return "success" if outcome.kind == "success" else "503"
        hung_up.set()  # WeChat gave up on this delivery; Serve cancels its handler

        async def retract_when_done() -> None:  # what Ingress.callback does for a shielded intake
            await replica.retract(message, await handling)

        self._late.add(asyncio.ensure_future(retract_when_done()))
        return "timeout"
