"""Thin Serve wrapper over ``IntentClassifier``."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

from functions.common.records import InboundMessage, Intent, Route
from functions.common.sensitive import SensitiveWordFilter, word_lists_from
from functions.common.settings import load_settings
from functions.intent.core import IntentClassifier, IntentTexts
from functions.intent.knn import BUNDLED_EXAMPLES, HybridEmbedding, KnnIntent, read_examples
from functions.intent.tools import load_tools
from observability.logs import audit_event, hashed_user
from observability.tracing import ReportsSpans, configure_for, set_attributes, traced


class IntentServer(ReportsSpans):
    def __init__(self, settings_overrides: dict[str, Any] | None = None):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("intent", settings)
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
                abuse=settings.abuse_text,
            ),
            load_tools(settings.tools, {"business_info": {"path": settings.business_info}, **settings.tool_options}),
            _knn(settings),
            settings.intent_threshold,
        )
        self._filter = SensitiveWordFilter(word_lists_from(settings.word_lists))
        self._refused_text = settings.refused_input_text

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    @traced("intent")
    def classify(self, message: InboundMessage) -> Intent:
        intent = self._classify(message)
        set_attributes(**{"wxassist.intent": intent.route.value, "wxassist.intent_reason": intent.reason,
                          "wxassist.intent_confidence": intent.confidence})
        return intent

    def _classify(self, message: InboundMessage) -> Intent:
        if message.content:
            decision = self._filter.scan(message.content, "input")
            if decision.action != "pass":
                audit_event("filtered", direction="input", action=decision.action, lists=decision.hits,
                            account=message.account, user=hashed_user(message.from_user), msg_id=message.msg_id)
            if decision.action == "refuse":
                return Intent(Route.ABUSE, 1.0, "sensitive words", reply=self._refused_text)
            message = replace(message, content=decision.text)
        return self._core.classify(message)


def _knn(settings) -> KnnIntent | None:
    if not settings.intent_knn:
        return None
    return _classifier(settings.intent_examples or BUNDLED_EXAMPLES, settings.embedding_dir(), settings.intent_dense_weight)


@functools.lru_cache(maxsize=4)
def _classifier(examples: Path, model_dir: Path, dense_weight: float) -> KnnIntent:
    """Built once per process: embedding the examples takes a second or two on CPU."""
    from functions.common.knowledge_base import SentenceEmbedder

    embedding = HybridEmbedding(SentenceEmbedder(model_dir).embed, dense_weight=dense_weight)
    return KnnIntent(read_examples(examples), embedding)
