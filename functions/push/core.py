"""Pure core of the push function: drain the outbox through a customer-service sender.

Outcomes of one send, and what the worker does with them:

* sent: the item leaves the outbox;
* ``SendRejected`` with a code that will not change by waiting (45015 outside the 48-hour
  window, 45047 over quota, 43004 unsubscribed, 40003 bad openid): dead letter, with reason;
* any other rejection (45009 rate limited, …) or ``SendFailed`` (never reached the platform):
  retried with backoff;
* ``SendAmbiguous`` (the platform may have delivered it): never resent.

Idempotency: before sending, the worker claims the item's attempt marker in the state store.
A worker that died between sending and acknowledging leaves the marker behind; whoever leases
the item next finds it and does not send again. At most once, never twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import logging

from functions.common.outbox import Outbox, OutboxItem
from functions.common.state import StateStore

logger = logging.getLogger("wxassist.push")

ATTEMPT_KEY_PREFIX = "wxa:push:attempt:"
UNDELIVERABLE_CODES = {
    40003: "invalid openid",
    43004: "the user has unsubscribed",
    43019: "the user has blocked the account",
    45015: "outside the 48-hour customer-service window",
    45047: "over the customer-service message quota",
}


class SendRejected(Exception):
    """The platform answered with an error code."""

    def __init__(self, errcode: int | None, errmsg: str):
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class SendFailed(Exception):
    """The request never reached the platform, or was refused before it acted: safe to retry."""


class SendAmbiguous(Exception):
    """The platform may or may not have delivered the message."""


class CustomerServiceSender(Protocol):
    def send_text(self, account: str, to_user: str, text: str) -> None: ...


@dataclass
class PushStats:
    sent: int = 0
    retried: int = 0
    undeliverable: int = 0
    not_resent: int = 0  # found an earlier attempt's marker: possibly sent already

    def total(self) -> int:
        return self.sent + self.retried + self.undeliverable + self.not_resent


@dataclass(frozen=True)
class PushAttempt:
    """What one attempt did, for traces and metrics: ``outcome`` is sent, retried,
    undeliverable or not_resent; ``errcode`` WeChat's code, "network" or None."""

    item: OutboxItem
    outcome: str
    errcode: str | None
    seconds: float


class PushWorker:
    def __init__(self, outbox: Outbox, sender: CustomerServiceSender, store: StateStore, *, batch_size: int = 16,
                 attempt_ttl_s: float = 86400.0, on_attempt: Callable[[PushAttempt], None] | None = None):
        self._outbox = outbox
        self._sender = sender
        self._store = store
        self._batch_size = batch_size
        self._attempt_ttl_s = attempt_ttl_s
        self._on_attempt = on_attempt or (lambda attempt: None)

    def run_once(self) -> PushStats:
        stats = PushStats()
        for item in self._outbox.take(self._batch_size):
            self._push(item, stats)
        return stats

    def _push(self, item: OutboxItem, stats: PushStats) -> None:
        started_s = time.monotonic()
        outcome, errcode = self._attempt(item)
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        try:
            self._on_attempt(PushAttempt(item, outcome, errcode, time.monotonic() - started_s))
        except Exception:  # telemetry must not stop the rest of a leased batch
            logger.exception("recording push attempt %s failed", item.item_id)

    def _attempt(self, item: OutboxItem) -> tuple[str, str | None]:
        """(the PushStats field this attempt counts in, the error code if any)."""
        marker = ATTEMPT_KEY_PREFIX + item.item_id
        if not self._store.set_if_absent(marker, "sending", self._attempt_ttl_s):
            self._outbox.undeliverable(item, "an earlier attempt may have delivered it; not sent again")
            return "not_resent", None
        try:
            self._sender.send_text(item.account, item.to_user, item.text)
        except SendRejected as exc:
            self._store.delete(marker)  # the platform refused it: nothing was delivered
            code = str(exc.errcode)
            reason = UNDELIVERABLE_CODES.get(exc.errcode or 0)
            if reason is not None:
                self._outbox.undeliverable(item, f"{exc.errcode} {reason}")
                return "undeliverable", code
            return ("retried" if self._outbox.failed(item, str(exc)) else "undeliverable"), code
        except SendFailed as exc:
            self._store.delete(marker)
            return ("retried" if self._outbox.failed(item, str(exc)) else "undeliverable"), "network"
        except SendAmbiguous as exc:
            self._outbox.undeliverable(item, f"not resent: {exc}")
            return "not_resent", "ambiguous"
        self._outbox.sent(item)
        return "sent", None
