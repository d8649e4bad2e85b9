"""Sensitive-word filtering, on what users send and on what they are sent.

Words are matched with an Aho-Corasick automaton (pyahocorasick) in one pass over the text,
however many words the lists hold. Matching happens on a normalised copy, so the usual
tricks do not get through: NFKC folds full-width letters and digits (ｆｕｃｋ) and compatibility
forms; case is folded; zero-width and other format characters, spaces and punctuation or
symbols inserted between the characters (傻 逼, 傻.逼, f*u*c*k) are dropped. Every kept
character remembers where it came from, so masking covers the original span, tricks included.

Each list has an action per direction: ``refuse`` (input: the message is not processed and
the user is told why; output: the answer is replaced), ``mask`` (the match becomes ``*``), or
``off``. A decision records which lists matched and how often, never the text or the words.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import ahocorasick

Action = Literal["refuse", "mask", "off"]
Direction = Literal["input", "output"]
MASK_CHAR = "*"
# Dropped before matching: separators (Z*), punctuation (P*), symbols (S*), format (Cf, the
# zero-width family) and other controls, and marks (M*: combining underlines, variation
# selectors). Letters, digits and CJK characters are kept.
_DROPPED_CATEGORIES = ("Z", "P", "S", "C", "M")


@dataclass(frozen=True)
class WordList:
    name: str
    words: tuple[str, ...]
    input_action: Action = "refuse"
    output_action: Action = "mask"

    def action(self, direction: Direction) -> Action:
        return self.input_action if direction == "input" else self.output_action


@dataclass(frozen=True)
class FilterDecision:
    action: Literal["pass", "refuse", "mask"]
    text: str  # the text to go on with: unchanged, or masked (refused: the original)
    hits: dict[str, int] = field(default_factory=dict)  # list name -> matches: safe to log


def normalise_with_positions(text: str) -> tuple[str, list[int]]:
    """The matching form of ``text``, and for each of its characters the index in ``text``
    of the character it came from (NFKC may turn one character into several)."""
    chars: list[str] = []
    positions: list[int] = []
    for index, char in enumerate(text):
        for folded in unicodedata.normalize("NFKC", char).casefold():
            if unicodedata.category(folded)[0] in _DROPPED_CATEGORIES:
                continue
            chars.append(folded)
            positions.append(index)
    return "".join(chars), positions


def word_lists_from(configs: Iterable) -> list[WordList]:
    """WordLists from settings' ``word_lists`` (functions.common.settings.WordListConfig)."""
    return [WordList(c.name, c.all_words(), c.input_action, c.output_action) for c in configs]


def read_word_file(path: Path) -> tuple[str, ...]:
    """One word per line; blank lines and ``#`` comments ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


class SensitiveWordFilter:
    def __init__(self, lists: Iterable[WordList]):
        self._lists = tuple(lists)
        self._automaton = ahocorasick.Automaton()
        owners: dict[str, set[int]] = {}
        for number, word_list in enumerate(self._lists):
            for word in word_list.words:
                key, _ = normalise_with_positions(word)
                if key:
                    owners.setdefault(key, set()).add(number)
        for key, numbers in owners.items():
            self._automaton.add_word(key, (len(key), tuple(sorted(numbers))))
        self._empty = not owners
        if not self._empty:
            self._automaton.make_automaton()

    def scan(self, text: str, direction: Direction) -> FilterDecision:
        if self._empty or not text:
            return FilterDecision("pass", text)
        folded, positions = normalise_with_positions(text)
        hits: Counter[str] = Counter()
        refuse = False
        masked_spans: list[tuple[int, int]] = []
        for end, (length, numbers) in self._automaton.iter(folded):
            first = positions[end - length + 1]
            if _inside_a_latin_word(text, first, folded[end - length + 1]):
                continue  # "is hit" is not "shit": spaces are dropped, word starts are not
            for number in numbers:
                word_list = self._lists[number]
                action = word_list.action(direction)
                if action == "off":
                    continue
                hits[word_list.name] += 1
                refuse = refuse or action == "refuse"
                if action == "mask":
                    masked_spans.append((first, positions[end]))
        if refuse:
            return FilterDecision("refuse", text, dict(hits))
        if masked_spans:
            return FilterDecision("mask", _mask(text, masked_spans), dict(hits))
        return FilterDecision("pass", text)


def _inside_a_latin_word(text: str, first: int, first_folded: str) -> bool:
    return first_folded.isascii() and first_folded.isalpha() and first > 0 and _is_latin_letter(text[first - 1])


def _is_latin_letter(char: str) -> bool:
    folded = unicodedata.normalize("NFKC", char)
    return len(folded) == 1 and folded.isascii() and folded.isalpha()


def _mask(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Star every letter, digit or CJK character from the first to the last original
    character of each match; the separators a trick put between them stay as they were."""
    chars = list(text)
    for first, last in spans:
        for index in range(first, last + 1):
            if unicodedata.category(chars[index])[0] not in _DROPPED_CATEGORIES:
                chars[index] = MASK_CHAR
    return "".join(chars)
