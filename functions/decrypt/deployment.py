"""Thin Serve wrapper over ``CallbackVerifier``; rejections come back as records."""

from __future__ import annotations

from typing import Any

from functions.common.clock import Clock, SystemClock
from functions.common.errors import RejectedRequest
from functions.common.records import InboundMessage, Rejection
from functions.common.settings import load_settings
from functions.decrypt.core import CallbackVerifier


class DecryptServer:
    def __init__(self, settings_overrides: dict[str, Any] | None = None, clock: Clock | None = None):
        settings = load_settings(**(settings_overrides or {}))
        self._core = CallbackVerifier(
            settings.account_map(),
            clock or SystemClock(),
            max_body_bytes=settings.max_body_bytes,
            timestamp_window_s=settings.timestamp_window_s,
        )

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    def verify_url(self, account: str, query: dict[str, str]) -> str | Rejection:
        try:
            return self._core.verify_url(account, query)
        except RejectedRequest as exc:
            return Rejection.of(exc)

    def open_callback(self, account: str, query: dict[str, str], body: bytes) -> InboundMessage | Rejection:
        try:
            return self._core.open_callback(account, query, body)
        except RejectedRequest as exc:
            return Rejection.of(exc)
