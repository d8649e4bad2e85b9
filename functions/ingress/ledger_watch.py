"""The ledger as waiting deliveries see it: one read for all of them (``LedgerWatch``), and
waiting on whichever of several things happens first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from functions.common.clock import TimerClock
from functions.common.ledger import ClaimLedger, LedgerEntry
from functions.ingress.overflow import Blocking


class LedgerWatch:
    """Every ``poll_s``, one read of the ledger entries all waiting deliveries of this replica
    want, however many there are: under a burst, per-delivery polling was the store's main
    load, and it starved the lease renewals queued behind it."""

    def __init__(self, ledger: ClaimLedger, clock: TimerClock, poll_s: float, blocking: Blocking):
        self._ledger = ledger
        self._clock = clock
        self._poll_s = poll_s
        self._blocking = blocking
        self._wanted: dict[tuple[str, str, str], list[asyncio.Future]] = {}
        self._looking: asyncio.Task | None = None

    async def next_look(self, dedupe_key: tuple[str, str, str]) -> LedgerEntry | None:
        """The message's entry as the next look finds it (None: gone)."""
        seen = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(dedupe_key, []).append(seen)
        if self._looking is None or self._looking.done():
            self._looking = asyncio.ensure_future(self._look())
        return await seen

    async def _look(self) -> None:
        while self._wanted:
            await self._clock.sleep(self._poll_s)
            wanted, self._wanted = self._wanted, {}
            try:
                entries = await self._blocking(self._ledger.lookup_many, list(wanted))
            except Exception as exc:  # the store is down: each waiter sees the failure
                for futures in wanted.values():
                    for seen in futures:
                        if not seen.done():
                            seen.set_exception(exc)
                continue
            for dedupe_key, futures in wanted.items():
                for seen in futures:
                    if not seen.done():
                        seen.set_result(entries.get(dedupe_key))


async def first_of(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` finishes; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
