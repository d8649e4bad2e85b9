"""Thin Serve wrapper over ``Retriever``. It owns the knowledge-base connection; with
Milvus Lite that means one replica per KB directory (deploy/local.yaml says so)."""

from __future__ import annotations

from typing import Any

import numpy as np

from functions.kb.answer_cache import AnswerCache, cacheable
from functions.common.clock import SystemClock
from functions.kb.embedding import shared_embedder
from functions.kb.store import KnowledgeBase
from functions.common.records import Found, Passage, Quote
from functions.common.settings import Settings, load_settings
from functions.retrieve.answerability import Evidence, answerability_for, evidence
from functions.retrieve.core import Retrieval, retriever_for
from functions.retrieve.faq import FaqMatcher
from functions.retrieve.quote import QuoteMaker
from observability.tracing import ReportsSpans, configure_for, set_attributes, traced


class KnowledgeFinder:
    """What the retrieve deployment does, without Serve: the FAQ fast path, the answer cache,
    then the passages with retrieval's verdict on whether they answer, and the quote."""

    def __init__(self, kb: KnowledgeBase, settings: Settings):
        self._kb = kb
        self._core = retriever_for(kb, settings)
        self._faq = FaqMatcher(kb, threshold=settings.faq_threshold)
        self._cache = AnswerCache(
            kb, SystemClock(), lexical_threshold=settings.answer_cache_threshold, ttl_s=settings.answer_cache_ttl_s
        )
        self._answerability = answerability_for(kb.embedder.name, settings.answerability, settings.answerability_model)
        self._gives_verdict = settings.answerability != "off"
        self._quotes = QuoteMaker(kb.embedder.embed_passages)

    def warm_up(self) -> None:
        """Load the embedding model and jieba's dictionary now, not on the first user's question."""
        self.find("预热 warm-up", "预热 warm-up", faq=False)

    def find(self, question: str, query: str, faq: bool = True, cache_account: str | None = None,
             question_vector: bytes = b"") -> Found:
        """The curated FAQ answer when ``question`` matches one (and the account uses the fast
        path), else a cached answer (when ``cache_account`` is given), else the passages for
        ``query``. ``question_vector``: the question's embedding, when intent made it."""
        if faq:
            hit = self._faq.match(question)
            if hit is not None:
                return Found(answer=hit.answer, kind="faq", sources=(hit.question,), documents=(hit.source,))
        if cache_account is not None:
            cached = self._cache.lookup(cache_account, question)
            if cached is not None:
                return Found(answer=cached.answer, kind="cache", sources=cached.sources)
        vector = np.frombuffer(question_vector, dtype=np.float32) if question_vector else None
        retrieval, quote, found = self.search(question, query, vector)
        answerable, confidence = self._answerability.answerable(found)
        # Without a verdict ("off"), no quote either: the model's grounding guard decides alone.
        quoted = quote if answerable and self._gives_verdict else None
        return Found(passages=tuple(retrieval.passages), answerable=answerable and bool(retrieval.passages),
                     confidence=confidence, quote=quoted)

    def search(self, question: str, query: str, vector: np.ndarray | None = None
               ) -> tuple[Retrieval, Quote | None, Evidence]:
        """The passages for ``query``, the quote they give the question, and the evidence the
        verdict is made from (bench/tuning/fit_answerability.py fits on it)."""
        if vector is None:
            vector = self._kb.embed_query(question)
        # A follow-up's query carries the conversation: its own vector, not the question's.
        retrieval = self._core.search(query, vector=vector if query == question else None)
        quote = self._quotes.quote(vector, retrieval.passages)
        return retrieval, quote, evidence(question, retrieval, quote.score if quote else 0.0)

    def remember_answer(
        self, account: str, question: str, answer: str, sources: tuple[str, ...], passages: list[Passage]
    ) -> bool:
        """Cache a grounded answer made from ``passages``, when nothing in it is personal."""
        if not cacheable(question, answer, [passage.text for passage in passages]):
            return False
        return self._cache.store(account, question, answer, sources, [passage.doc_id for passage in passages])


class RetrieveServer(ReportsSpans):
    def __init__(self, settings_overrides: dict[str, Any] | None = None):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("retrieve", settings)
        self._kb = KnowledgeBase(settings.kb_location(), settings.kb_collection, shared_embedder(settings))
        self._kb.check_embedder()  # refuse to start on vectors of another model, with what to do
        self._finder = KnowledgeFinder(self._kb, settings)
        self._finder.warm_up()

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    @traced("retrieve")
    def find(self, question: str, query: str, faq: bool = True, cache_account: str | None = None,
             question_vector: bytes = b"") -> Found:
        found = self._finder.find(question, query, faq, cache_account, question_vector)
        set_attributes(**{"wxassist.found": found.kind, "wxassist.faq_hit": found.kind == "faq",
                          "wxassist.cache_hit": found.kind == "cache", "wxassist.passages": len(found.passages),
                          "wxassist.answerable": found.answerable, "wxassist.answerable_p": found.confidence})
        return found

    @traced("retrieve")
    def remember_answer(
        self, account: str, question: str, answer: str, sources: tuple[str, ...], passages: list[Passage]
    ) -> bool:
        return self._finder.remember_answer(account, question, answer, sources, passages)

    def close(self) -> None:
        """Release the knowledge base (Milvus Lite's lock); once."""
        kb, self._kb = getattr(self, "_kb", None), None
        if kb is not None:
            kb.close()

    def __del__(self) -> None:  # Serve calls this on shutdown
        self.close()
