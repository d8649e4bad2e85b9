"""Where an account's answers go when a passive reply cannot carry them: pushed through the
customer-service API (passive-then-push), or held for the user's "继续" (passive-only)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from functions.common.clock import Clock
from functions.common.continuation import ContinuationStore
from functions.common.outbox import Outbox, OutboxItem
from functions.common.records import InboundMessage, Reply

# Runs a blocking store call: in a thread in the service; in the loop itself under test, so a
# scenario on a ManualClock is deterministic.
Blocking = Callable[..., Awaitable[Any]]


class Overflow(Protocol):
    """Where an account's answers go when a passive reply cannot carry them."""

    async def hold(self, message: InboundMessage, job_id: str, parts: tuple[str, ...], first_part: int) -> None:
        """Deliver ``parts[first_part:]`` some other way; safe to call twice for one job."""
        ...

    async def handed_off(self, message: InboundMessage, job_id: str) -> Reply | None:
        """What the last delivery answers while the job is still running (None: ``success``)."""
        ...

    async def unserved(self, message: InboundMessage, job_id: str, parts: tuple[str, ...]) -> None:
        """No delivery carried ``parts[0]``; the later parts already went to ``hold``."""
        ...


class PushOverflow:
    """passive-then-push: through the outbox to the customer-service API. Item ids are the
    idempotency keys, so holding a part twice queues it once."""

    def __init__(self, outbox: Outbox, clock: Clock, trace_carrier: Callable[[], str] = lambda: "",
                 blocking: Blocking = asyncio.to_thread):
        self._outbox = outbox
        self._clock = clock
        self._trace_carrier = trace_carrier  # the current trace, so the push joins the message's
        self._blocking = blocking

    async def hold(self, message: InboundMessage, job_id: str, parts: tuple[str, ...], first_part: int) -> None:
        for index, text in enumerate(parts[first_part:], start=first_part):
            item = OutboxItem(f"{job_id}:{index}", message.account, message.from_user, text, self._clock.now_s(),
                              trace=self._trace_carrier())
            await self._blocking(self._outbox.put, item)

    async def handed_off(self, message: InboundMessage, job_id: str) -> Reply | None:
        return None

    async def unserved(self, message: InboundMessage, job_id: str, parts: tuple[str, ...]) -> None:
        await self.hold(message, job_id, parts[:1], 0)  # the later parts are queued (or sent) already


class HeldOverflow:
    """passive-only: held for "继续"; the last delivery tells the user to come back for it."""

    def __init__(self, continuations: ContinuationStore, placeholder: Callable[[InboundMessage], Awaitable[Reply]],
                 blocking: Blocking = asyncio.to_thread):
        self._continuations = continuations
        self._placeholder = placeholder
        self._blocking = blocking

    async def hold(self, message: InboundMessage, job_id: str, parts: tuple[str, ...], first_part: int) -> None:
        if first_part > 0 and len(parts) <= first_part:
            return  # served whole, never handed off: nothing to hold and no pending mark to clear
        await self._blocking(self._continuations.hold, message, job_id, tuple(parts[first_part:]))

    async def handed_off(self, message: InboundMessage, job_id: str) -> Reply | None:
        await self._blocking(self._continuations.expect, message, job_id)
        return await self._placeholder(message)

    async def unserved(self, message: InboundMessage, job_id: str, parts: tuple[str, ...]) -> None:
        # The user never saw the hint, so they cannot have fetched a later part: hold it all.
        await self.hold(message, job_id, parts, 0)
