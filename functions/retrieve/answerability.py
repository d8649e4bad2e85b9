"""Does the knowledge base answer this question? Decided from retrieval's own evidence.

Three signals, all from the search that was made anyway:

* ``top_cosine``: how close the best passage is in meaning (the embedder's cosine);
* ``cosine_gap``: how far it stands above the fifth best. A question the documents answer
  has one or two passages clearly closer than the rest; an unrelated one is about equally far
  from everything, however high the embedder's cosines run for that kind of text;
* ``coverage``: the share of the question's content bigrams the best passages contain (a
  weak signal alone: a paraphrase shares few, but a near miss shares fewer).

A logistic model weighs them into a probability, and a threshold decides between answering
and "not found". The weights and threshold are fitted per embedder (cosines of two models are
not on one scale) on the sample corpus's labelled questions only: ``bench/tuning/
fit_answerability.py`` prints the table below, and a test checks the code holds what it
prints. A team with another embedder fits its own on its own labelled questions and points
``WXA_ANSWERABILITY_MODEL`` at the JSON file. The old rule, bigram coverage of the question
alone (``coverage``), is kept to measure against.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from functions.common.errors import ConfigurationError
from functions.common.text import coverage
from functions.retrieve.core import Retrieval

GAP_RANK = 4  # the fifth best passage: what "the rest" scores
COVERAGE_PASSAGES = 3
OLD_RULE_MIN_COVERAGE = 0.4  # what the generator's on-topic check asked before


@dataclass(frozen=True)
class Evidence:
    top_cosine: float
    cosine_gap: float
    coverage: float

    def as_features(self) -> tuple[float, float, float]:
        return (self.top_cosine, self.cosine_gap, self.coverage)


def evidence(question: str, retrieval: Retrieval) -> Evidence:
    dense = retrieval.dense
    top = dense[0].score if dense else 0.0
    rest = dense[min(GAP_RANK, len(dense) - 1)].score if dense else 0.0
    passages = retrieval.passages[:COVERAGE_PASSAGES] or retrieval.keyword[:COVERAGE_PASSAGES]
    covered = max((coverage(question, passage) for passage in passages), default=0.0)
    return Evidence(round(top, 6), round(top - rest, 6), round(covered, 6))


@dataclass(frozen=True)
class AnswerabilityModel:
    """p(answerable) = logistic(bias + Σ weight × (feature − mean) / scale)."""

    embedder: str
    means: tuple[float, float, float]
    scales: tuple[float, float, float]
    weights: tuple[float, float, float]
    bias: float
    threshold: float  # answer at or above this probability

    def probability(self, found: Evidence) -> float:
        z = self.bias + sum(w * (x - m) / s for w, x, m, s in zip(self.weights, found.as_features(), self.means,
                                                                 self.scales, strict=True))
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))

    def answerable(self, found: Evidence) -> tuple[bool, float]:
        probability = self.probability(found)
        return probability >= self.threshold, round(probability, 4)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, raw: str) -> AnswerabilityModel:
        values = json.loads(raw)
        return cls(values["embedder"], tuple(values["means"]), tuple(values["scales"]), tuple(values["weights"]),
                   float(values["bias"]), float(values["threshold"]))


class CoverageRule:
    """The old rule: answerable when a passage holds enough of the question's bigrams."""

    def answerable(self, found: Evidence) -> tuple[bool, float]:
        return found.coverage >= OLD_RULE_MIN_COVERAGE, round(found.coverage, 4)


# Fitted by bench/tuning/fit_answerability.py on bench/retrieval_questions.jsonl and
# bench/tuning/ (the sample corpus only); keyed by embedder name.
FITTED: dict[str, AnswerabilityModel] = {}


def answerability_for(embedder: str, rule: str, model_file: Path | None = None) -> AnswerabilityModel | CoverageRule:
    """``rule``: "retrieval" (the fitted model) or "coverage" (the old rule)."""
    if rule == "coverage":
        return CoverageRule()
    if model_file is not None:
        model = AnswerabilityModel.from_json(Path(model_file).read_text(encoding="utf-8"))
        if model.embedder != embedder:
            raise ConfigurationError(f"{model_file} was fitted for the embedder {model.embedder}, not {embedder}")
        return model
    if embedder not in FITTED:
        raise ConfigurationError(
            f"no answerability model for the embedder {embedder}: fit one on your labelled questions with "
            "bench/tuning/fit_answerability.py and set WXA_ANSWERABILITY_MODEL to the file it writes")
    return FITTED[embedder]
