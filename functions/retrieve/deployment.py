"""Thin Serve wrapper over ``Retriever``. It owns the knowledge-base connection; with
Milvus Lite that means one replica per KB directory (deploy/local.yaml says so)."""

from __future__ import annotations

from typing import Any

from functions.common.answer_cache import AnswerCache, cacheable
from functions.common.clock import SystemClock
from functions.common.knowledge_base import KnowledgeBase, SentenceEmbedder
from functions.common.records import Found, Passage
from functions.common.settings import load_settings
from functions.retrieve.core import Retriever
from functions.retrieve.faq import FaqMatcher
from observability.tracing import ReportsSpans, configure_for, set_attributes, traced


class RetrieveServer(ReportsSpans):
    def __init__(self, settings_overrides: dict[str, Any] | None = None):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("retrieve", settings)
        embedder = SentenceEmbedder(settings.embedding_dir())
        self._kb = KnowledgeBase(settings.kb_location(), settings.kb_collection, embedder)
        self._core = Retriever(self._kb, settings.retrieve_top_k)
        self._faq = FaqMatcher(self._kb, threshold=settings.faq_threshold)
        self._cache = AnswerCache(
            self._kb, SystemClock(), lexical_threshold=settings.answer_cache_threshold, ttl_s=settings.answer_cache_ttl_s
        )
        # Load the embedding model and jieba's dictionary now, not on the first user's question.
        self._core.retrieve("预热 warm-up")

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    @traced("retrieve")
    def find(self, question: str, query: str, faq: bool = True, cache_account: str | None = None) -> Found:
        """One hop for the ingress: the curated FAQ answer when ``question`` matches one (and
        the account uses the fast path), else a cached answer (when ``cache_account`` is
        given), else the passages for ``query``."""
        found = self._find(question, query, faq, cache_account)
        set_attributes(**{"wxassist.found": found.kind, "wxassist.faq_hit": found.kind == "faq",
                          "wxassist.cache_hit": found.kind == "cache", "wxassist.passages": len(found.passages)})
        return found

    def _find(self, question: str, query: str, faq: bool, cache_account: str | None) -> Found:
        if faq:
            hit = self._faq.match(question)
            if hit is not None:
                return Found(answer=hit.answer, kind="faq", sources=(hit.question,))
        if cache_account is not None:
            cached = self._cache.lookup(cache_account, question)
            if cached is not None:
                return Found(answer=cached.answer, kind="cache", sources=cached.sources)
        return Found(passages=tuple(self._core.retrieve(query)))

    @traced("retrieve")
    def remember_answer(
        self, account: str, question: str, answer: str, sources: tuple[str, ...], passages: list[Passage]
    ) -> bool:
        """Cache a grounded answer generated from ``passages``, when nothing in it is personal."""
        if not cacheable(question, answer, [passage.text for passage in passages]):
            return False
        return self._cache.store(account, question, answer, sources, [passage.doc_id for passage in passages])

    def __del__(self) -> None:  # Serve calls this on shutdown: release the Milvus Lite lock
        kb = getattr(self, "_kb", None)
        if kb is not None:
            kb.close()
