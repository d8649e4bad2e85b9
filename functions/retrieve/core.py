"""Pure core of the retrieve function: hybrid search by score fusion, and the evidence of
whether what was found answers the question at all.

The knowledge base answers a dense search (the embedder's cosine) and a keyword search (BM25
over jieba tokens); this module fuses them. A multilingual embedder's cosines sit in a narrow
band (multilingual-e5: about 0.80 for unrelated text, 0.93 for a close match), so the dense
side is rescaled within its candidate list before it is weighed: the best candidate scores 1,
the ``dense_floor_rank``-th and below 0. BM25 is scaled by its best hit. Score fusion, not
reciprocal-rank fusion: RRF throws away the gap between a real match and a near miss.

Whether the passages answer the question is decided from that same evidence
(``functions/retrieve/answerability.py``), not from words shared with the question: a
customer's paraphrase shares few.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from functions.common.records import Passage

MAX_QUERY_CHARS = 512


class PassageSearch(Protocol):
    def dense_search(self, query: str, limit: int, vector: np.ndarray | None = None) -> list[Passage]: ...

    def keyword_search(self, query: str, limit: int) -> list[Passage]: ...


@dataclass(frozen=True)
class FusionWeights:
    # Chosen on the sample corpus's tuning questions (bench/tuning/): keyword 0.6 and a
    # relative floor of 0.3 put the right document first for 78% and in the top 3 for 93%.
    keyword: float = 0.6
    dense: float = 1.0
    dense_floor_rank: int = 9  # the candidate whose cosine counts as "no match" on the dense side


def fuse(keyword: list[Passage], dense: list[Passage], weights: FusionWeights = FusionWeights()) -> list[Passage]:
    """Weighted sum of rescaled scores, best first; ties keep keyword order."""
    fused: dict[str, float] = {}
    by_id: dict[str, Passage] = {}
    best_keyword = max((p.score for p in keyword), default=0.0)
    for passage in keyword:
        scaled = passage.score / best_keyword if best_keyword > 0 else 0.0
        fused[passage.chunk_id] = fused.get(passage.chunk_id, 0.0) + weights.keyword * scaled
        by_id.setdefault(passage.chunk_id, passage)
    if dense:
        top = dense[0].score
        floor = dense[min(weights.dense_floor_rank, len(dense) - 1)].score
        for passage in dense:
            scaled = (passage.score - floor) / (top - floor) if top > floor else 1.0
            fused[passage.chunk_id] = fused.get(passage.chunk_id, 0.0) + weights.dense * max(scaled, 0.0)
            by_id.setdefault(passage.chunk_id, passage)
    ranked = sorted(fused, key=lambda chunk_id: fused[chunk_id], reverse=True)
    return [replace(by_id[chunk_id], score=round(fused[chunk_id], 6)) for chunk_id in ranked]


@dataclass(frozen=True)
class Retrieval:
    """The passages to answer from, best first, and the raw evidence behind them."""

    passages: list[Passage]
    dense: list[Passage]  # best-first, cosine scores
    keyword: list[Passage]  # best-first, BM25 scores


def retriever_for(search: PassageSearch, settings) -> Retriever:
    """The retriever the settings describe (``retrieve_*``)."""
    return Retriever(search, settings.retrieve_top_k, weights=FusionWeights(keyword=settings.retrieve_keyword_weight),
                     min_relative_score=settings.retrieve_min_relative_score)


class Retriever:
    def __init__(
        self,
        search: PassageSearch,
        top_k: int,
        *,
        weights: FusionWeights = FusionWeights(),
        max_per_document: int = 2,
        min_relative_score: float = 0.3,
        candidates_per_list: int = 12,
    ):
        self._search = search
        self._top_k = top_k
        self._weights = weights
        self._max_per_document = max_per_document
        self._min_relative_score = min_relative_score
        self._candidates = candidates_per_list

    def retrieve(self, query: str, top_k: int | None = None, vector: np.ndarray | None = None) -> list[Passage]:
        return self.search(query, top_k, vector).passages

    def search(self, query: str, top_k: int | None = None, vector: np.ndarray | None = None) -> Retrieval:
        """The ``top_k`` best passages: at most ``max_per_document`` from any one document, so a
        long document cannot crowd out the others, and none scoring under
        ``min_relative_score`` of the best, so a weak match is neither prompted nor cited.
        ``vector``: the query's embedding, when the caller has it."""
        query = query[:MAX_QUERY_CHARS]
        wanted = top_k or self._top_k
        limit = max(self._candidates, wanted * 2, self._weights.dense_floor_rank + 1)
        keyword = self._search.keyword_search(query, limit)
        dense = self._search.dense_search(query, limit, vector)
        ranked = fuse(keyword, dense, self._weights)
        floor = ranked[0].score * self._min_relative_score if ranked else 0.0
        kept: list[Passage] = []
        per_document: dict[str, int] = {}
        for passage in ranked:
            if passage.score < floor:
                break
            if per_document.get(passage.doc_id, 0) >= self._max_per_document:
                continue
            per_document[passage.doc_id] = per_document.get(passage.doc_id, 0) + 1
            kept.append(passage)
            if len(kept) == wanted:
                break
        return Retrieval(kept, dense, keyword)
