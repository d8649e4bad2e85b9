"""Thin Serve wrapper over ``IntentClassifier``."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

from functions.kb.embedding import Embedder, shared_embedder
from functions.common.records import InboundMessage, Intent, Route
from functions.common.sensitive import SensitiveWordFilter, word_lists_from
from functions.common.settings import Settings, load_settings
from functions.intent.business_info import BusinessInfo, company_name, operator_business_info
from functions.intent.by_examples import BUNDLED_EXAMPLES, HybridEmbedding, KnnIntent, LinearIntent, read_examples
from functions.intent.core import IntentClassifier, IntentTexts
from functions.intent.tools import load_tools
from observability.logs import audit_event, hashed_user
from observability.tracing import ReportsSpans, configure_for, set_attributes, traced


class IntentServer(ReportsSpans):
    def __init__(self, settings_overrides: dict[str, Any] | None = None):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("intent", settings)
        embedder = shared_embedder(settings) if settings.intent_knn else None
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
                identity=identity_text(settings),
            ),
            _tools(settings),
            _by_examples(settings, embedder),
            settings.intent_threshold,
            (lambda text: embedder.embed_queries([text])[0]) if embedder is not None else None,
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


def identity_text(settings: Settings) -> str:
    """Who the assistant is: ``WXA_IDENTITY_TEXT``, or one made from the assistant's and the
    operator's company's names (never another company's)."""
    if settings.identity_text:
        return settings.identity_text
    company = company_name(settings)
    who = f"{company}的{settings.assistant_name}" if company else settings.assistant_name
    return f"您好，我是{who}，可以根据{company or '我们'}的资料回答您的问题。需要人工服务时请发送“人工”。"


def _tools(settings: Settings):
    """The configured tools; the business-facts tool only with the operator's own facts."""
    business = operator_business_info(settings)
    paths = [path for path in settings.tools if business is not None or not path.endswith(f":{BusinessInfo.__name__}")]
    return load_tools(paths, {"business_info": {"path": business}, **settings.tool_options})


def _by_examples(settings: Settings, embedder: Embedder | None) -> LinearIntent | KnnIntent | None:
    if embedder is None:
        return None
    return _classifier(settings.intent_examples or BUNDLED_EXAMPLES, embedder, settings.intent_dense_weight,
                       settings.intent_model)


@functools.lru_cache(maxsize=4)
def _classifier(examples: Path, embedder: Embedder, dense_weight: float, model: str) -> LinearIntent | KnnIntent:
    """Built once per process: embedding the examples takes a second or two on CPU."""
    embedding = HybridEmbedding(lambda texts: embedder.embed_queries(texts), dense_weight=dense_weight)
    kind = LinearIntent if model == "linear" else KnnIntent
    return kind(read_examples(examples), embedding)
