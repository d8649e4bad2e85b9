"""Per-user and per-account rate limits: token buckets in the shared state store.

A user gets ``user_burst`` messages at once and ``user_per_min`` a minute after that; an
account gets ``account_burst`` and ``account_per_s``. The buckets live in the state store and
are updated atomically (a Lua script in Redis, one immediate transaction in SQLite), so the
limits hold however many ingress replicas share them. A limited user gets a friendly reply,
never silence. Keys hold a hash of the user id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from functions.common.clock import Clock
from functions.common.records import InboundMessage
from functions.common.state import StateStore, user_digest

KEY_PREFIX = "wxa:limit:"


@dataclass(frozen=True)
class LimitPolicy:
    user_burst: int = 10
    user_per_min: float = 20.0
    account_burst: int = 500
    account_per_s: float = 50.0

    def limits_users(self) -> bool:
        return self.user_burst > 0 and self.user_per_min > 0

    def limits_accounts(self) -> bool:
        return self.account_burst > 0 and self.account_per_s > 0


@dataclass(frozen=True)
class Admission:
    allowed: bool
    scope: Literal["", "user", "account"] = ""  # which limit refused it
    retry_after_s: float = 0.0


ADMITTED = Admission(True)


class RateLimiter:
    def __init__(self, store: StateStore, clock: Clock, policy: LimitPolicy):
        self._store = store
        self._clock = clock
        self._policy = policy

    def admit(self, message: InboundMessage) -> Admission:
        """Take a token from the user's bucket, then from the account's."""
        now_s = self._clock.now_s()
        policy = self._policy
        if policy.limits_users():
            key = f"{KEY_PREFIX}user:{message.account}:{user_digest(message.from_user)}"
            wait_s = self._store.take_token(key, policy.user_burst, policy.user_per_min / 60.0, now_s)
            if wait_s > 0:
                return Admission(False, "user", wait_s)
        if policy.limits_accounts():
            key = f"{KEY_PREFIX}account:{message.account}"
            wait_s = self._store.take_token(key, policy.account_burst, policy.account_per_s, now_s)
            if wait_s > 0:
                return Admission(False, "account", wait_s)
        return ADMITTED
