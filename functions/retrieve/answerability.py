"""Does the knowledge base answer this question? Decided from retrieval's own evidence.

Four signals, all from the search that was made anyway:

* ``top_cosine``: how close the best passage is in meaning (the embedder's cosine);
* ``cosine_gap``: how far it stands above the fifth best. A question the documents answer
  has one or two passages clearly closer than the rest; an unrelated one is about equally far
  from everything, however high the embedder's cosines run for that kind of text;
* ``sentence_cosine``: how close the best single sentence of the best passages is (what the
  quote would say): a document *about* the topic has passages near the question, but only one
  that answers it has a sentence that near;
* ``coverage``: the share of the question's content bigrams the best passages contain (a
  weak signal alone: a paraphrase shares few, but a near miss shares fewer).

A logistic model weighs them into a probability, and a threshold decides between answering
and "not found". The weights and threshold are fitted per embedder (cosines of two models are
not on one scale) on the sample corpus's labelled questions only: ``bench/tuning/
fit_answerability.py`` prints the trade-off at each threshold and writes the model into
``fitted/``. The threshold balances the two errors on the tuning set (a customer sent to a
person although a document answers; a marked quote that does not answer the question). A team with another embedder fits its own on its own labelled questions and points
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


FEATURES = ("top_cosine", "cosine_gap", "sentence_cosine", "coverage")


@dataclass(frozen=True)
class Evidence:
    top_cosine: float
    cosine_gap: float
    sentence_cosine: float
    coverage: float

    def as_features(self) -> tuple[float, ...]:
        return (self.top_cosine, self.cosine_gap, self.sentence_cosine, self.coverage)


def evidence(question: str, retrieval: Retrieval, sentence_cosine: float) -> Evidence:
    """``sentence_cosine``: the quote's score (functions/retrieve/quote.py), 0 without one."""
    dense = retrieval.dense
    top = dense[0].score if dense else 0.0
    rest = dense[min(GAP_RANK, len(dense) - 1)].score if dense else 0.0
    passages = retrieval.passages[:COVERAGE_PASSAGES] or retrieval.keyword[:COVERAGE_PASSAGES]
    covered = max((coverage(question, passage) for passage in passages), default=0.0)
    return Evidence(round(top, 6), round(top - rest, 6), round(sentence_cosine, 6), round(covered, 6))


@dataclass(frozen=True)
class AnswerabilityModel:
    """p(answerable) = logistic(bias + Σ weight × (feature − mean) / scale)."""

    embedder: str
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float  # answer at or above this probability

    def probability(self, found: Evidence) -> float:
        return self.probability_of(found.as_features())

    def probability_of(self, features) -> float:
        z = self.bias + sum(w * (x - m) / s for w, x, m, s in zip(self.weights, features, self.means, self.scales,
                                                                 strict=True))
        return 1.0 / (1.0 + math.exp(-max(min(float(z), 40.0), -40.0)))

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


class AlwaysAnswerable:
    """No verdict from retrieval: the passages found go on (the model's grounding guard stays)."""

    def answerable(self, found: Evidence) -> tuple[bool, float]:
        return True, 1.0


class CoverageRule:
    """The old rule: answerable when a passage holds enough of the question's bigrams."""

    def answerable(self, found: Evidence) -> tuple[bool, float]:
        return found.coverage >= OLD_RULE_MIN_COVERAGE, round(found.coverage, 4)


# Written by ``bench/tuning/fit_answerability.py --out functions/retrieve/fitted/NAME.json``
# (the sample corpus's questions only); one file per bundled embedder.
FITTED_DIR = Path(__file__).with_name("fitted")


def fitted_models() -> dict[str, AnswerabilityModel]:
    """The bundled models, by the name of the embedder they were fitted for."""
    models = [AnswerabilityModel.from_json(path.read_text(encoding="utf-8")) for path in sorted(FITTED_DIR.glob("*.json"))]
    return {model.embedder: model for model in models}


def answerability_for(embedder: str, rule: str,
                      model_file: Path | None = None) -> AnswerabilityModel | CoverageRule | AlwaysAnswerable:
    """``rule``: "retrieval" (the fitted model), "coverage" (the old rule) or "off"."""
    if rule == "coverage":
        return CoverageRule()
    if rule == "off":
        return AlwaysAnswerable()
    if model_file is not None:
        model = AnswerabilityModel.from_json(Path(model_file).read_text(encoding="utf-8"))
        if model.embedder != embedder:
            raise ConfigurationError(f"{model_file} was fitted for the embedder {model.embedder}, not {embedder}")
        return model
    fitted = fitted_models()
    if embedder not in fitted:
        raise ConfigurationError(
            f"no answerability model for the embedder {embedder}: fit one on your labelled questions with "
            "bench/tuning/fit_answerability.py and set WXA_ANSWERABILITY_MODEL to the file it writes, "
            "or set WXA_ANSWERABILITY=coverage")
    return fitted[embedder]
