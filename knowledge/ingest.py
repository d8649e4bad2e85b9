"""Ingest files or directories into the knowledge base, idempotently.

Unchanged documents (same content hash) are skipped; changed ones have every old chunk
deleted before the new ones go in, so a document that shrank leaves no orphan chunks and an
ingest run twice leaves no duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from functions.kb.answer_cache import AnswerCache
from functions.common.clock import SystemClock
from functions.common.errors import KnowledgeBaseError
from functions.kb.store import KnowledgeBase
from knowledge.chunking import chunk_document
from knowledge.loaders import SUPPORTED_SUFFIXES, load_document


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    chunks_written: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "chunks_written": self.chunks_written,
        }


def discover(paths: Iterable[Path]) -> Iterator[tuple[Path, str]]:
    """(file, source name) pairs; a directory's files are named relative to it."""
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUPPORTED_SUFFIXES and not _hidden(file, path):
                    yield file, file.relative_to(path).as_posix()
        elif path.is_file():
            yield path, path.name
        else:
            raise KnowledgeBaseError(f"{path}: no such file or directory")


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def ingest(kb: KnowledgeBase, paths: Iterable[Path]) -> IngestReport:
    kb.ensure_collection()
    stored = kb.document_hashes()
    report = IngestReport()
    replaced: list[str] = []
    for file, source in discover(paths):
        chunks = chunk_document(load_document(file, source))
        if not chunks:
            continue
        doc_id, doc_hash = chunks[0].doc_id, chunks[0].doc_hash
        if stored.get(doc_id) == doc_hash:
            report.unchanged.append(source)
            continue
        kb.replace_document(doc_id, chunks)
        if doc_id in stored:
            replaced.append(doc_id)
        (report.updated if doc_id in stored else report.added).append(source)
        report.chunks_written += len(chunks)
    # Cached answers citing a changed document must not outlive it (they are also checked
    # on every hit, in case another process changes the KB).
    AnswerCache(kb, SystemClock()).invalidate_documents(replaced)
    return report
