"""``wxassist kb …``: ingest, search and count the knowledge base from the command line."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from functions.common.settings import Settings, load_settings
from functions.intent.business_info import HOME_FILE
from knowledge import SAMPLE_BUSINESS_INFO, SAMPLE_CORPUS_DIR


def ensure_sample_knowledge(settings: Settings) -> None:
    """The sample corpus, when the knowledge base is empty (``wxassist up`` on a fresh home).
    Its company's business facts (hotline, stores) go beside it into the home, and the
    collection is marked as the sample: an operator's first ingest replaces both."""
    from knowledge.ingest import ingest

    with open_kb(settings) as kb:
        if kb.stats()["chunks"]:
            return
        print("Knowledge base is empty: ingesting the sample corpus (青禾家居, a furniture shop)…")
        report = ingest(kb, [SAMPLE_CORPUS_DIR])
        kb.mark_sample(True)  # an operator's first ingest replaces it
        print(f"  {len(report.added)} documents, {report.chunks_written} chunks; "
              "`wxassist kb ingest YOUR_DOCUMENTS` replaces it")
    home_facts = settings.home_dir() / HOME_FILE
    if settings.business_info is None and not home_facts.exists():
        home_facts.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_BUSINESS_INFO, home_facts)


def open_kb(settings: Settings):
    from functions.kb.embedding import build_embedder
    from functions.kb.store import KnowledgeBase

    return KnowledgeBase(settings.kb_location(), settings.kb_collection, build_embedder(settings))


def _is_sample(paths: list[Path]) -> bool:
    return all(path.resolve() == SAMPLE_CORPUS_DIR.resolve() for path in paths)


def drop_sample_business_info(settings: Settings) -> bool:
    """Remove the sample company's facts from the home (never a file the operator wrote)."""
    home_facts = settings.home_dir() / HOME_FILE
    if home_facts.is_file() and home_facts.read_bytes() == SAMPLE_BUSINESS_INFO.read_bytes():
        home_facts.unlink()
        return True
    return False


def ingest_paths(settings: Settings, paths: list[Path], *, rebuild: bool = False):
    """``kb ingest``: the report, and what was replaced ("sample", "rebuilt" or "")."""
    from knowledge.ingest import ingest

    with open_kb(settings) as kb:
        replaced = ""
        if rebuild:
            kb.rebuild()
            replaced = "rebuilt"
        elif kb.holds_sample and not _is_sample(paths):
            # Another company's documents must not be mixed with 青禾家居's.
            kb.rebuild()
            replaced = "sample"
        else:
            kb.check_embedder()
        sample = _is_sample(paths) and (kb.holds_sample or not kb.stats()["chunks"])
        report = ingest(kb, paths)
        if kb.has_collection():
            kb.mark_sample(sample)
    if replaced == "sample" or (replaced == "rebuilt" and not _is_sample(paths)):
        drop_sample_business_info(settings)
    return report, replaced


def _cmd_kb_ingest(opts: argparse.Namespace) -> int:
    paths = [Path(path) for path in opts.paths]
    report, replaced = ingest_paths(load_settings(), paths, rebuild=opts.rebuild)
    if opts.json:
        print(json.dumps({**report.as_dict(), "replaced": replaced}, ensure_ascii=False))
    else:
        if replaced == "sample":
            print("replaced the bundled sample corpus (and its company's business facts) with your documents")
        elif replaced == "rebuilt":
            print("rebuilt the knowledge base with the configured embedder")
        print(
            f"added {len(report.added)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}; "
            f"{report.chunks_written} chunks written"
        )
    return 0


def _cmd_kb_search(opts: argparse.Namespace) -> int:
    from functions.retrieve.core import retriever_for

    settings = load_settings()
    with open_kb(settings) as kb:
        passages = retriever_for(kb, settings).retrieve(opts.query, opts.k)
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
        sample = " (the bundled sample)" if stats["sample"] else ""
        print(f"{settings.kb_location()}: {stats['documents']} documents, {stats['chunks']} chunks{sample}; "
              f"embedder {stats['embedder']} ({stats['dim']} dimensions)")
    return 0


def register_kb_commands(commands) -> None:
    kb = commands.add_parser("kb", help="the knowledge base").add_subparsers(dest="kb_command", required=True)
    kb_ingest = kb.add_parser("ingest", help="ingest files or directories (md, txt, html, FAQ jsonl/csv)")
    kb_ingest.add_argument("paths", nargs="+")
    kb_ingest.add_argument("--rebuild", action="store_true",
                           help="drop the knowledge base first (after changing WXA_EMBEDDER)")
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

