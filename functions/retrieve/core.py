"""Pure core of the retrieve function: hybrid search by score fusion.

The knowledge base answers a dense search (all-MiniLM-L6-v2 cosine) and a keyword search
(BM25 over jieba tokens); this module fuses them. Each list's scores are scaled to [0, 1]
(BM25 by the best hit, cosine as is) and combined with weights. MiniLM is English-first: on
Chinese its cosine is close to noise (0.8 between unrelated FAQ questions was measured), so
for a mostly-Chinese query the dense side only breaks ties. Score fusion, not reciprocal-rank
fusion: RRF throws away BM25's large gaps between a real match and a near miss, and with a
weak second list that reorders answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Protocol

from functions.common.records import Passage

MAX_QUERY_CHARS = 512
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD_CHAR = re.compile(r"\w")


class PassageSearch(Protocol):
    def dense_search(self, query: str, limit: int) -> list[Passage]: ...

    def keyword_search(self, query: str, limit: int) -> list[Passage]: ...


@dataclass(frozen=True)
class FusionWeights:
    keyword: float = 1.0
    dense: float = 1.0
    dense_for_chinese: float = 0.2

    def dense_weight(self, query: str) -> float:
        return self.dense_for_chinese if cjk_share(query) >= 0.5 else self.dense


def cjk_share(text: str) -> float:
    """Share of the word characters that are Chinese."""
    letters = len(_WORD_CHAR.findall(text))
    return len(_CJK.findall(text)) / letters if letters else 0.0


def fuse(keyword: list[Passage], dense: list[Passage], keyword_weight: float, dense_weight: float) -> list[Passage]:
    """Weighted sum of normalised scores, best first; ties keep keyword order."""
    best_keyword = max((p.score for p in keyword), default=0.0)
    fused: dict[str, float] = {}
    by_id: dict[str, Passage] = {}
    for passage in keyword:
        normalised = passage.score / best_keyword if best_keyword > 0 else 0.0
        fused[passage.chunk_id] = fused.get(passage.chunk_id, 0.0) + keyword_weight * normalised
        by_id.setdefault(passage.chunk_id, passage)
    for passage in dense:
        fused[passage.chunk_id] = fused.get(passage.chunk_id, 0.0) + dense_weight * max(passage.score, 0.0)
        by_id.setdefault(passage.chunk_id, passage)
    ranked = sorted(fused, key=lambda chunk_id: fused[chunk_id], reverse=True)
    return [replace(by_id[chunk_id], score=round(fused[chunk_id], 6)) for chunk_id in ranked]


class Retriever:
    def __init__(
        self,
        search: PassageSearch,
        top_k: int,
        *,
        weights: FusionWeights = FusionWeights(),
        max_per_document: int = 2,
        min_relative_score: float = 0.5,
        candidates_per_list: int = 12,
    ):
        self._search = search
        self._top_k = top_k
        self._weights = weights
        self._max_per_document = max_per_document
        self._min_relative_score = min_relative_score
        self._candidates = candidates_per_list

    def retrieve(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The ``top_k`` best passages: at most ``max_per_document`` from any one document, so a
        long document cannot crowd out the others, and none scoring under
        ``min_relative_score`` of the best, so a weak match is neither prompted nor cited."""
        query = query[:MAX_QUERY_CHARS]
        wanted = top_k or self._top_k
        limit = max(self._candidates, wanted * 2)
        ranked = fuse(
            self._search.keyword_search(query, limit),
            self._search.dense_search(query, limit),
            self._weights.keyword,
            self._weights.dense_weight(query),
        )
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
        return kept
