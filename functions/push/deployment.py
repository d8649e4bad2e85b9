"""Thin Serve wrapper over ``PushWorker``: a replica drains the outbox in a background loop.
Several replicas may run: leases keep them off each other's items."""

from __future__ import annotations

import logging
import threading
from typing import Any

from functions.common.clock import Clock, SystemClock
from functions.common.outbox import Outbox
from functions.common.settings import load_settings
from functions.common.state import open_state_store
from functions.push.core import CustomerServiceSender, PushWorker
from functions.push.wechat_api import WeChatSender

logger = logging.getLogger("wxassist.push")


class PushServer:
    def __init__(
        self,
        settings_overrides: dict[str, Any] | None = None,
        clock: Clock | None = None,
        sender: CustomerServiceSender | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
        clock = clock or SystemClock()
        store = open_state_store(settings.state_location(), clock)
        sender = sender or WeChatSender(settings.account_map(), store, settings.wechat_api_base)
        self._worker = PushWorker(Outbox(store, clock, lease_s=settings.push_lease_s), sender, store)
        self._poll_s = settings.push_poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_forever, name="outbox-drain", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    def _drain_forever(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                while (stats := self._worker.run_once()).total():  # keep going while there is work
                    logger.info("pushed sent=%d retried=%d undeliverable=%d not_resent=%d",
                                stats.sent, stats.retried, stats.undeliverable, stats.not_resent)
            except Exception as exc:  # a store or network outage: try again next tick
                logger.error("outbox drain failed: %s", type(exc).__name__)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
