"""Intent learned from labelled examples (``knowledge/intents/examples.jsonl``).

Each text is embedded as the concatenation of two unit vectors, scaled so that the cosine of
two embeddings is ``w * dense + (1 - w) * lexical``:

* dense: the service's embedder (functions/kb/embedding.py; multilingual-e5 by default),
  which knows meaning;
* lexical: hashed character unigrams and bigrams, which know Chinese surface form ("转人工",
  "垃圾") but not meaning.

Two classifiers over that embedding: ``LinearIntent`` (the default), a softmax regression
fitted on the examples, and ``KnnIntent``, the weighted vote of the ``k`` nearest examples.
A label is a route: the examples' "faq" and "knowledge" questions take the same route, so they
are one label to the classifier (``ROUTE_OF``). Below the confidence threshold, or when
nothing is near, the caller keeps its default (the knowledge route).
``bench/intent_accuracy.py`` measures them on held-out splits.
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

LABELS = ("faq", "knowledge", "chitchat", "tool", "handoff", "abuse")  # what examples may say
# What the classifier learns: a label is the route a message takes, and FAQ questions are
# knowledge questions (the FAQ fast path finds them by their answer, not by their intent).
ROUTE_OF = {"faq": "knowledge"}
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


def as_routes(examples: Sequence[Example]) -> list[Example]:
    return [Example(example.text, ROUTE_OF.get(example.label, example.label)) for example in examples]


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

    def embed(self, texts: Sequence[str], dense: np.ndarray | None = None) -> np.ndarray:
        """``dense``: the texts' dense vectors, when the caller has them already."""
        lexical = np.stack([self._lexical(text) for text in texts]) * self._lexical_scale
        if self._dense is None or self._dense_scale == 0.0:
            return lexical
        dense = np.asarray(self._dense(list(texts)) if dense is None else dense, dtype=np.float32).reshape(len(texts), -1)
        dense = dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12)
        return np.concatenate([dense * self._dense_scale, lexical], axis=1)

    def _lexical(self, text: str) -> np.ndarray:
        chars = TOKEN_CHAR.findall(unicodedata.normalize("NFKC", text).lower())
        vector = np.zeros(self._buckets, dtype=np.float32)
        for gram in [*chars, *(a + b for a, b in zip(chars, chars[1:]))]:
            digest = zlib.crc32(gram.encode("utf-8"))  # stable across processes, unlike hash()
            vector[digest % self._buckets] += 1.0 if digest & 1 << 31 else -1.0
        norm = np.linalg.norm(vector)
        return vector / norm if norm else vector


class LinearIntent:
    """Softmax regression over the hybrid embedding, fitted on the examples at start (a
    fraction of a second). On the bundled examples' held-out splits it labels more texts right
    than the nearest-neighbour vote (bench/intent_accuracy.py); ``confidence`` is the
    probability of the winning label, ``similarity`` the nearest example's cosine."""

    def __init__(self, examples: Sequence[Example], embedding: HybridEmbedding, *, strength: float = 10.0,
                 min_similarity: float = 0.25):
        from sklearn.linear_model import LogisticRegression

        if not examples:
            raise ValueError("the intent classifier needs labelled examples")
        examples = as_routes(examples)
        self._embedding = embedding
        self._matrix = embedding.embed([example.text for example in examples])
        labels = [example.label for example in examples]
        if len(set(labels)) < 2:
            raise ValueError("the intent classifier needs examples of at least two labels")
        self._model = LogisticRegression(C=strength, max_iter=2000).fit(self._matrix, labels)
        self._min_similarity = min_similarity

    def predict(self, text: str, dense: np.ndarray | None = None) -> Prediction | None:
        """The most probable label; None when no example is near at all (nothing to go by)."""
        vector = self._embedding.embed([text], None if dense is None else dense[None, :])
        best = float((self._matrix @ vector[0]).max())
        if best < self._min_similarity:
            return None
        probabilities = self._model.predict_proba(vector)[0]
        winner = int(np.argmax(probabilities))
        return Prediction(str(self._model.classes_[winner]), round(float(probabilities[winner]), 4), round(best, 4))


class KnnIntent:
    def __init__(self, examples: Sequence[Example], embedding: HybridEmbedding, *, k: int = 7, min_similarity: float = 0.25):
        if not examples:
            raise ValueError("the intent classifier needs labelled examples")
        examples = as_routes(examples)
        self._labels = [example.label for example in examples]
        self._embedding = embedding
        self._matrix = embedding.embed([example.text for example in examples])
        self._k = min(k, len(examples))
        self._min_similarity = min_similarity

    def predict(self, text: str, dense: np.ndarray | None = None) -> Prediction | None:
        """The vote of the nearest examples; None when no example is near at all."""
        similarities = self._matrix @ self._embedding.embed([text], None if dense is None else dense[None, :])[0]
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


def evaluate_held_out(examples: Sequence[Example], classifier: Callable[[Sequence[Example]], LinearIntent | KnnIntent],
                      seeds: int, threshold: float) -> dict:
    """Accuracy on held-out splits over ``seeds`` seeds (``bench/intent_accuracy.py``): the
    share of held-out texts whose route label the service would act on as the examples say.
    As in the service, a prediction below ``threshold`` (or none) means the knowledge route."""
    correct = confident = confident_correct = total = 0
    for seed in range(seeds):
        kept, held = split_examples(examples, seed)
        classify = classifier(kept)
        for example in as_routes(held):
            prediction = classify.predict(example.text)
            total += 1
            sure = prediction is not None and prediction.confidence >= threshold
            label = prediction.label if sure else "knowledge"
            correct += label == example.label
            if sure:
                confident += 1
                confident_correct += label == example.label
    return {
        "accuracy": round(correct / total, 3),
        "confident_share": round(confident / total, 3),
        "confident_accuracy": round(confident_correct / confident, 3) if confident else 0.0,
        "held_out": total,
    }
