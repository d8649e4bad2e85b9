"""Injected time and randomness, so cores are deterministic under test."""

from __future__ import annotations

import secrets
import time
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float: ...


class SystemClock:
    def now_s(self) -> float:
        return time.time()


class FixedClock:
    """A clock that stands still until told to move; for tests and replaying old vectors."""

    def __init__(self, now_s: float):
        self._now_s = float(now_s)

    def now_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        self._now_s += seconds


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
