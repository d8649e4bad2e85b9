"""Is an answer supported by the passages it was given? If not, answer from them directly.

Support is measured as the share of the answer's character bigrams (CJK characters, letters
and digits; punctuation and spacing ignored) that occur in the passages, leaving out those it
could have copied from the question. A paraphrase in
Chinese keeps most bigrams of its source; an invented URL or an off-topic ramble keeps few.
An answer that loops (few distinct bigrams) fails too: a small model that
copies can copy the same sentence over and over. So does one that repeats the system prompt. A failed answer is replaced by an extractive one
(the passage sentences that share most with the question, quoted with their title) when the
best passage is about the question, and by nothing (the caller says "not found") otherwise. This guards production models against
hallucination and keeps the tiny demo model (SmolLM2-135M, English-only) from ever sending
an ungrounded answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from functions.common.records import Passage
from functions.common.text import TOKEN_CHAR, bigrams

_SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]?")
_FAQ_ANSWER_MARK = "答："
_LIST_MARK = re.compile(r"^\s*(?:[-*>]|\d+[.)、])\s*")
MAX_EXTRACT_CHARS = 220
MIN_NEW_BIGRAMS = 4


def support(answer: str, passages: Sequence[Passage], question: str = "") -> float:
    """Share of the answer's bigrams found in the passages, not counting bigrams the answer
    could have taken from the question: echoing the question proves nothing."""
    answer_bigrams = bigrams(answer) - bigrams(question)
    if not answer_bigrams:
        return 0.0
    source_bigrams = set().union(*(bigrams(p.text) for p in passages)) if passages else set()
    return len(answer_bigrams & source_bigrams) / len(answer_bigrams)


def leaks_prompt(answer: str, system_prompt: str, window_chars: int = 10) -> bool:
    """The model repeating its instructions (a small model's habit, an attacker's goal)."""
    compact_answer = "".join(answer.split())
    compact_prompt = "".join(system_prompt.split())
    return any(
        compact_prompt[i : i + window_chars] in compact_answer
        for i in range(0, max(len(compact_prompt) - window_chars + 1, 0), 2)
    )


def repetitive(answer: str, min_distinct_share: float = 0.6) -> bool:
    """A decoding loop repeats itself: few distinct bigrams among many. Short answers pass."""
    chars = TOKEN_CHAR.findall(answer.lower())
    pairs = [a + b for a, b in zip(chars, chars[1:])]
    return len(pairs) >= 20 and len(set(pairs)) / len(pairs) < min_distinct_share


def acceptable(answer: str, passages: Sequence[Passage], *, question: str, system_prompt: str, min_support: float) -> bool:
    """Fit to send: says something beyond the question, without looping or leaking the
    instructions, and (when there are passages) supported by them."""
    if len(bigrams(answer) - bigrams(question)) < MIN_NEW_BIGRAMS or repetitive(answer):
        return False
    if leaks_prompt(answer, system_prompt):
        return False
    return not passages or support(answer, passages, question) >= min_support


def extractive_answer(question: str, passages: Sequence[Passage], max_chars: int = MAX_EXTRACT_CHARS) -> str:
    """From the best passage: all of it when short, else the sentences sharing most with
    the question (the opening ones when none does), in document order, within ``max_chars``."""
    if not passages:
        return ""
    sentences = _sentences(passages[0])
    if sum(map(len, sentences)) <= max_chars:  # a short passage (an FAQ answer) is quoted whole
        return "".join(sentences)
    wanted = bigrams(question)
    overlap = [len(bigrams(sentence) & wanted) for sentence in sentences]
    order = sorted((i for i in range(len(sentences)) if overlap[i]), key=lambda i: (-overlap[i], i))
    chosen: list[int] = []
    used = 0
    for index in order or range(len(sentences)):
        if chosen and used + len(sentences[index]) > max_chars:
            break
        chosen.append(index)
        used += len(sentences[index])
    return "".join(sentences[i] for i in sorted(chosen))


def _sentences(passage: Passage) -> list[str]:
    """Prose sentences of a passage: FAQ answers without their question, no headings, no
    table rows, each ending in punctuation."""
    text = passage.text
    if _FAQ_ANSWER_MARK in text:
        text = text.split(_FAQ_ANSWER_MARK, 1)[1]
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(("#", "|")) and line.strip() != passage.title]
    sentences = []
    for sentence in _SENTENCE.findall("\n".join(lines)):
        clean = _LIST_MARK.sub("", sentence).replace("**", "").strip()
        if len(clean) > 1:
            sentences.append(clean if clean[-1] in "。！？!?；;" else clean + "。")
    return sentences
