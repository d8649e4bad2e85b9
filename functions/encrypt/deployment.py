"""Thin Serve wrapper over ``ReplySealer``."""

from __future__ import annotations

from typing import Any

from functions.common.clock import Clock, RandomSource, SecureRandom, SystemClock
from functions.common.records import InboundMessage, Reply
from functions.common.sensitive import SensitiveWordFilter, word_lists_from
from functions.common.settings import load_settings
from functions.encrypt.core import ReplySealer, render_answer_text
from observability.logs import audit_event, hashed_user
from observability.tracing import ReportsSpans, configure_for, traced


class EncryptServer(ReportsSpans):
    def __init__(
        self,
        settings_overrides: dict[str, Any] | None = None,
        clock: Clock | None = None,
        random: RandomSource | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("encrypt", settings)
        self._core = ReplySealer(
            settings.account_map(), clock or SystemClock(), random or SecureRandom(), continue_hint=settings.continue_hint_text
        )

        # The last gate before the user: model answers, quotes, canned texts and pushed parts
        # all pass through text_reply.
        self._filter = SensitiveWordFilter(word_lists_from(settings.word_lists))
        self._refused_text = settings.refused_output_text

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    @traced("encrypt")
    def text_reply(self, message: InboundMessage, text: str, sources: tuple[str, ...] = ()) -> Reply:
        text, refused = self._filtered(message, text)
        return self._core.text_reply(message, render_answer_text(text, () if refused else sources))

    @traced("encrypt")
    def part_reply(self, message: InboundMessage, text: str) -> Reply:
        """A held part with its label: the label is the user's own words, not filtered yet."""
        return self._core.part_reply(message, self._filtered(message, text)[0])

    def _filtered(self, message: InboundMessage, text: str) -> tuple[str, bool]:
        """(the text to send, whether it was refused), after the output word lists."""
        decision = self._filter.scan(text, "output")
        if decision.action != "pass":
            audit_event("filtered", direction="output", action=decision.action, lists=decision.hits,
                        account=message.account, user=hashed_user(message.from_user), msg_id=message.msg_id)
        if decision.action == "refuse":
            return self._refused_text, True
        return decision.text, False

    @traced("encrypt")
    def handoff_reply(self, message: InboundMessage, fallback_text: str) -> Reply:
        return self._core.handoff_reply(message, fallback_text)
