"""The FAQ fast path: a question that matches a curated FAQ entry closely enough is answered
with the curated answer, without touching the GPU.

FAQ entries are the knowledge base's FAQ documents (JSONL/CSV ``question,answer`` files,
chunked as "问：…\\n答：…" with the question as title), so re-ingesting the FAQ updates the fast
path too. Candidates come from the BM25 search; each is scored against the user's question by
``faq_similarity`` and the best is used only above the threshold: a wrong curated answer is
worse than a generated one, so the threshold favours precision. Only whole answers are served:
a long answer chunked into pieces is left to generation. Curated answers are defused of
injected instructions like any passage (functions/common/injection.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from functions.common.injection import remove_instructions
from functions.common.records import Passage
from functions.common.text import faq_similarity

# An FAQ chunk: "问：<question>\n答：<answer>", as stored possibly under a title line.
_FAQ_CHUNK = re.compile(r"(?:\A|\n)问：([^\n]*)\n答：(.*)\Z", re.DOTALL)


class KeywordSearch(Protocol):
    def keyword_search(self, query: str, limit: int) -> list[Passage]: ...


@dataclass(frozen=True, slots=True)
class FaqHit:
    question: str  # the curated question it matched
    answer: str
    doc_id: str
    score: float
    source: str = ""  # the FAQ document's name as ingested


def faq_answer(passage: Passage) -> str | None:
    """The curated answer of an FAQ chunk, or None for anything else (prose that happens to
    contain a 问/答 pair is not an FAQ entry: its title is not the question)."""
    match = _FAQ_CHUNK.search(passage.text)
    if match is None or match.group(1).strip() != passage.title.strip():
        return None  # prose, or one piece of a split answer ("问：…（1/3）"): not served whole
    return remove_instructions(match.group(2).strip())[0]


class FaqMatcher:
    def __init__(self, search: KeywordSearch, *, threshold: float = 0.78, candidates: int = 8):
        self._search = search
        self._threshold = threshold
        self._candidates = candidates

    def match(self, question: str) -> FaqHit | None:
        best: FaqHit | None = None
        for passage in self._search.keyword_search(question, self._candidates):
            answer = faq_answer(passage)
            if answer is None:
                continue
            score = faq_similarity(question, passage.title)
            if score >= self._threshold and (best is None or score > best.score):
                best = FaqHit(passage.title, answer, passage.doc_id, round(score, 4), passage.source)
        return best
