"""Thin Serve wrapper over ``IntentClassifier``."""

from __future__ import annotations

from typing import Any

from functions.common.records import InboundMessage, Intent
from functions.common.settings import load_settings
from functions.intent.core import IntentClassifier, IntentTexts


class IntentServer:
    def __init__(self, settings_overrides: dict[str, Any] | None = None):
        settings = load_settings(**(settings_overrides or {}))
        self._core = IntentClassifier(
            IntentTexts(
                welcome=settings.welcome_text,
                help=settings.help_text,
                greeting=settings.greeting_text,
                reset=settings.reset_text,
                handoff=settings.handoff_text,
                unsupported=settings.unsupported_text,
                thanks=settings.thanks_text,
                goodbye=settings.goodbye_text,
                menu=settings.menu,
            )
        )

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    def classify(self, message: InboundMessage) -> Intent:
        return self._core.classify(message)
