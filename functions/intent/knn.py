"""Intent by nearest neighbours over labelled examples (``knowledge/intents/examples.jsonl``).

Each text is embedded as the concatenation of two unit vectors, scaled so that the cosine of
two embeddings is ``w * dense + (1 - w) * lexical``:

* dense: all-MiniLM-L6-v2 (the knowledge base's embedder), which knows meaning but is
  English-first;
* lexical: hashed character unigrams and bigrams, which know Chinese surface form ("转人工",
  "垃圾") but not meaning.

``bench/intent_accuracy.py`` measures each alone and the mix on a held-out split. A message
gets the label of the weighted vote of its ``k`` nearest examples, with the vote share as its
confidence; below the threshold (or when nothing is near) the caller keeps its default.
"""

from __future__ import annotations

import json
import math
import random
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from functions.common.text import TOKEN_CHAR

LABELS = ("faq", "knowledge", "chitchat", "tool", "handoff", "abuse")
BUNDLED_EXAMPLES = Path(__file__).resolve().parents[2] / "knowledge" / "intents" / "examples.jsonl"
DenseEmbed = Callable[[Sequence[str]], list[list[float]]]


@dataclass(frozen=True)
class Example:
    text: str
    label: str


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # the winning label's share of the neighbours' similarity
    similarity: float  # of the nearest example


def read_examples(path: Path = BUNDLED_EXAMPLES) -> list[Example]:
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("route") not in LABELS:
            raise ValueError(f"{path}:{number}: route must be one of {', '.join(LABELS)}")
        examples.append(Example(str(row["text"]), row["route"]))
    return examples


class HybridEmbedding:
    def __init__(self, dense: DenseEmbed | None, dense_weight: float = 0.5, buckets: int = 4096):
        if dense is None:
            dense_weight = 0.0
        self._dense = dense
        self._dense_scale = math.sqrt(dense_weight)
        self._lexical_scale = math.sqrt(1.0 - dense_weight)
        self._buckets = buckets

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        lexical = np.stack([self._lexical(text) for text in texts]) * self._lexical_scale
        if self._dense is None or self._dense_scale == 0.0:
            return lexical
        dense = np.asarray(self._dense(list(texts)), dtype=np.float32)
        dense /= np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
        return np.concatenate([dense * self._dense_scale, lexical], axis=1)

    def _lexical(self, text: str) -> np.ndarray:
        chars = TOKEN_CHAR.findall(unicodedata.normalize("NFKC", text).lower())
        vector = np.zeros(self._buckets, dtype=np.float32)
        for gram in [*chars, *(a + b for a, b in zip(chars, chars[1:]))]:
            digest = zlib.crc32(gram.encode("utf-8"))  # stable across processes, unlike hash()
            vector[digest % self._buckets] += 1.0 if digest & 1 << 31 else -1.0
        norm = np.linalg.norm(vector)
        return vector / norm if norm else vector


class KnnIntent:
    def __init__(self, examples: Sequence[Example], embedding: HybridEmbedding, *, k: int = 7, min_similarity: float = 0.25):
        if not examples:
            raise ValueError("the intent classifier needs labelled examples")
        self._labels = [example.label for example in examples]
        self._embedding = embedding
        self._matrix = embedding.embed([example.text for example in examples])
        self._k = min(k, len(examples))
        self._min_similarity = min_similarity

    def predict(self, text: str) -> Prediction | None:
        """The vote of the nearest examples; None when no example is near at all."""
        similarities = self._matrix @ self._embedding.embed([text])[0]
        nearest = np.argsort(-similarities)[: self._k]
        best = float(similarities[nearest[0]])
        if best < self._min_similarity:
            return None
        votes: dict[str, float] = defaultdict(float)
        for index in nearest:
            votes[self._labels[index]] += max(float(similarities[index]), 0.0)
        label = max(votes, key=votes.__getitem__)
        total = sum(votes.values())
        return Prediction(label, round(votes[label] / total, 4) if total else 0.0, round(best, 4))


def split_examples(examples: Sequence[Example], seed: int, held_out_share: float = 0.2) -> tuple[list[Example], list[Example]]:
    """Per label, a seeded ``held_out_share`` held out and the rest kept."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    kept: list[Example] = []
    held: list[Example] = []
    for group in by_label.values():
        group = sorted(group, key=lambda e: e.text)
        rng.shuffle(group)
        cut = max(1, round(len(group) * held_out_share))
        held += group[:cut]
        kept += group[cut:]
    return kept, held


def _route(label: str) -> str:
    """FAQ and knowledge questions take the same route: confusing them costs nothing."""
    return "knowledge" if label == "faq" else label


def evaluate_held_out(examples: Sequence[Example], embedding: HybridEmbedding, seeds: int, threshold: float) -> dict:
    """Accuracy on held-out splits over ``seeds`` seeds (``bench/intent_accuracy.py``)."""
    correct = routed = confident = confident_routed = total = 0
    for seed in range(seeds):
        kept, held = split_examples(examples, seed)
        classifier = KnnIntent(kept, embedding)
        for example in held:
            prediction = classifier.predict(example.text)
            total += 1
            if prediction is None:
                continue
            correct += prediction.label == example.label
            same_route = _route(prediction.label) == _route(example.label)
            routed += same_route
            if prediction.confidence >= threshold:
                confident += 1
                confident_routed += same_route
    return {
        "accuracy": round(correct / total, 3),
        "route_accuracy": round(routed / total, 3),
        "confident_share": round(confident / total, 3),
        "confident_route_accuracy": round(confident_routed / confident, 3) if confident else 0.0,
        "held_out": total,
    }
