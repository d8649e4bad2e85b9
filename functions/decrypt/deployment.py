"""Thin Serve wrapper over ``CallbackVerifier``; rejections come back as records."""

from __future__ import annotations

from typing import Any

from functions.common.clock import Clock, SystemClock
from functions.common.errors import RejectedRequest
from functions.common.records import InboundMessage, Rejection
from functions.common.settings import load_settings
from functions.decrypt.core import CallbackVerifier
from observability.logs import hashed_user
from observability.tracing import ReportsSpans, configure_for, record_error, set_attributes, traced


class DecryptServer(ReportsSpans):
    def __init__(self, settings_overrides: dict[str, Any] | None = None, clock: Clock | None = None):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("decrypt", settings)
        self._core = CallbackVerifier(
            settings.account_map(),
            clock or SystemClock(),
            max_body_bytes=settings.max_body_bytes,
            timestamp_window_s=settings.timestamp_window_s,
        )

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    @traced("decrypt")
    def verify_url(self, account: str, query: dict[str, str]) -> str | Rejection:
        try:
            return self._core.verify_url(account, query)
        except RejectedRequest as exc:
            return _rejected(exc)

    @traced("decrypt")
    def open_callback(self, account: str, query: dict[str, str], body: bytes) -> InboundMessage | Rejection:
        set_attributes(**{"wxassist.account": account[:64]})  # from the URL, not yet validated
        try:
            message = self._core.open_callback(account, query, body)
        except RejectedRequest as exc:
            return _rejected(exc)
        set_attributes(**{"wechat.msg_id": message.msg_id, "wechat.msg_type": message.msg_type,
                          "wxassist.user": hashed_user(message.from_user)})
        return message


def _rejected(exc: RejectedRequest) -> Rejection:
    from opentelemetry import trace

    record_error(trace.get_current_span(), exc)
    return Rejection.of(exc)
