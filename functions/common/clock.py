"""Injected time and randomness, so cores are deterministic under test.

``Clock`` tells the time; ``TimerClock`` can also wait. Code that waits for WeChat's windows
(the delivery engine) sleeps on its clock, never on ``asyncio.sleep``, so a test moves time
with ``ManualClock.advance`` and every deadline fires exactly when the test says.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import secrets
import time
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float: ...


class TimerClock(Clock, Protocol):
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now_s(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FixedClock:
    """A clock that stands still until told to move; for tests and replaying old vectors."""

    def __init__(self, now_s: float):
        self._now_s = float(now_s)

    def now_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        self._now_s += seconds


class ManualClock:
    """Time that moves only when a test says. ``sleep`` waits for ``advance`` to pass its end;
    ``advance`` wakes sleepers in time order and lets what they start run to its next wait
    before moving on, so a scenario on one event loop, with its store calls made in the loop
    (not in threads), runs the same way every time."""

    SETTLE_TURNS = 50  # event-loop turns that let woken tasks reach their next wait

    def __init__(self, now_s: float):
        self._now_s = float(now_s)
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    def now_s(self) -> float:
        return self._now_s

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now_s + seconds, next(self._order), wake))
        await wake

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, stopping at every sleeper's end on the way."""
        end_s = self._now_s + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= end_s:
            at_s, _, wake = heapq.heappop(self._sleepers)
            self._now_s = max(self._now_s, at_s)
            if not wake.done():
                wake.set_result(None)
            await self.settle()
        self._now_s = end_s
        await self.settle()

    async def advance_to(self, at_s: float) -> None:
        await self.advance(max(0.0, at_s - self._now_s))

    async def settle(self) -> None:
        for _ in range(self.SETTLE_TURNS):
            await asyncio.sleep(0)


class RandomSource(Protocol):
    def token_bytes(self, n: int) -> bytes: ...


class SecureRandom:
    """The 16-byte AES prefix and reply nonces must be unpredictable: use ``secrets``."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


class FixedRandom:
    """Returns the same bytes every time; only for byte-exact test vectors."""

    def __init__(self, data: bytes):
        self._data = data

    def token_bytes(self, n: int) -> bytes:
        if len(self._data) < n:
            raise ValueError(f"FixedRandom holds {len(self._data)} bytes, {n} asked")
        return self._data[:n]
