"""``wxassist kb …``: ingest, search and count the knowledge base from the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from functions.common.settings import Settings, load_settings


def ensure_sample_knowledge(settings: Settings) -> None:
    """The sample corpus, when the knowledge base is empty (``wxassist up`` on a fresh home)."""
    from knowledge import SAMPLE_CORPUS_DIR
    from knowledge.ingest import ingest

    with open_kb(settings) as kb:
        if kb.stats()["chunks"]:
            return
        print("Knowledge base is empty: ingesting the sample corpus…")
        report = ingest(kb, [SAMPLE_CORPUS_DIR])
        print(f"  {len(report.added)} documents, {report.chunks_written} chunks")


def open_kb(settings: Settings):
    from functions.common.knowledge_base import KnowledgeBase, SentenceEmbedder

    return KnowledgeBase(settings.kb_location(), settings.kb_collection, SentenceEmbedder(settings.embedding_dir()))


def _cmd_kb_ingest(opts: argparse.Namespace) -> int:
    from knowledge.ingest import ingest

    with open_kb(load_settings()) as kb:
        report = ingest(kb, [Path(path) for path in opts.paths])
    if opts.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print(
            f"added {len(report.added)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}; "
            f"{report.chunks_written} chunks written"
        )
    return 0


def _cmd_kb_search(opts: argparse.Namespace) -> int:
    from functions.retrieve.core import Retriever

    settings = load_settings()
    with open_kb(settings) as kb:
        passages = Retriever(kb, settings.retrieve_top_k).retrieve(opts.query, opts.k)
    if opts.json:
        ranked = [{"rank": rank, **asdict(passage)} for rank, passage in enumerate(passages, start=1)]
        print(json.dumps({"query": opts.query, "passages": ranked}, ensure_ascii=False))
        return 0
    for rank, passage in enumerate(passages, start=1):
        snippet = " ".join(passage.text.split())[:120]
        print(f"{rank}. [{passage.score:.4f}] {passage.title} ({passage.source})\n   {snippet}")
    if not passages:
        print("no passages found")
    return 0


def _cmd_kb_stats(opts: argparse.Namespace) -> int:
    settings = load_settings()
    with open_kb(settings) as kb:
        stats = kb.stats()
    if opts.json:
        print(json.dumps({"uri": settings.kb_location(), **stats}))
    else:
        print(f"{settings.kb_location()}: {stats['documents']} documents, {stats['chunks']} chunks")
    return 0


def register_kb_commands(commands) -> None:
    kb = commands.add_parser("kb", help="the knowledge base").add_subparsers(dest="kb_command", required=True)
    kb_ingest = kb.add_parser("ingest", help="ingest files or directories (md, txt, html, FAQ jsonl/csv)")
    kb_ingest.add_argument("paths", nargs="+")
    kb_ingest.add_argument("--json", action="store_true")
    kb_ingest.set_defaults(handler=_cmd_kb_ingest)
    kb_search = kb.add_parser("search", help="hybrid search, ranked passages with sources")
    kb_search.add_argument("query")
    kb_search.add_argument("-k", type=int, default=3, help="passages to return")
    kb_search.add_argument("--json", action="store_true")
    kb_search.set_defaults(handler=_cmd_kb_search)
    kb_stats = kb.add_parser("stats", help="documents and chunks stored")
    kb_stats.add_argument("--json", action="store_true")
    kb_stats.set_defaults(handler=_cmd_kb_stats)

