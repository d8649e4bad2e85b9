"""Split documents into retrievable chunks with stable ids.

A document's id is a hash of its source name, a chunk's id is ``doc_id:index``, and the
document's content hash decides whether a re-ingest touches it at all.
"""

from __future__ import annotations

import hashlib
import re

from functions.kb.store import Chunk
from knowledge.loaders import Document

MAX_CHUNK_CHARS = 500
_HEADING = re.compile(r"^#{1,6}\s+", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")


def document_id(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


def document_hash(document: Document) -> str:
    return hashlib.sha256(document.content_for_hash().encode("utf-8")).hexdigest()


def chunk_document(document: Document, max_chars: int = MAX_CHUNK_CHARS) -> list[Chunk]:
    doc_id = document_id(document.source)
    doc_hash = document_hash(document)
    if document.faq:  # one chunk per pair; an answer too long for one continues in more
        pairs = [(question, piece) for question, answer in document.faq for piece in _split_long(answer, max_chars)]
        # A split answer's pieces say so ("问：…（1/3）"): the FAQ fast path serves only whole
        # answers, and a piece never matches as one.
        counts = {question: sum(q == question for q, _ in pairs) for question, _ in pairs}
        seen: dict[str, int] = {}
        texts = []
        for question, piece in pairs:
            seen[question] = seen.get(question, 0) + 1
            marker = f"（{seen[question]}/{counts[question]}）" if counts[question] > 1 else ""
            texts.append(f"问：{question}{marker}\n答：{piece}")
        titles = [question for question, _ in pairs]
    else:
        texts = _pack(_sections(document.text), max_chars)
        titles = [document.title] * len(texts)
    return [
        Chunk(
            chunk_id=f"{doc_id}:{index}",
            doc_id=doc_id,
            doc_hash=doc_hash,
            source=document.source,
            title=title,
            text=text,
        )
        for index, (title, text) in enumerate(zip(titles, texts, strict=True))
    ]


def _sections(text: str) -> list[str]:
    """Markdown sections (a heading with its body), or paragraphs for plain text."""
    if _HEADING.search(text):
        starts = [match.start() for match in _HEADING.finditer(text)]
        bounds = zip([0, *starts], [*starts, len(text)])
        pieces = [text[start:end] for start, end in bounds]
    else:
        pieces = re.split(r"\n\s*\n", text)
    return [piece.strip() for piece in pieces if piece.strip() and not _is_only_title(piece)]


def _is_only_title(piece: str) -> bool:
    stripped = piece.strip()
    return stripped.startswith("# ") and "\n" not in stripped


def _pack(sections: list[str], max_chars: int) -> list[str]:
    """Greedily join whole sections up to ``max_chars``; split only sections too big alone."""
    chunks: list[str] = []
    current = ""
    for section in sections:
        for piece in _split_long(section, max_chars):
            if current and len(current) + len(piece) + 2 > max_chars:
                chunks.append(current)
                current = ""
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _split_long(section: str, max_chars: int) -> list[str]:
    if len(section) <= max_chars:
        return [section]
    pieces, current = [], ""
    for sentence in _SENTENCE_END.split(section):
        if current and len(current) + len(sentence) > max_chars:
            pieces.append(current.strip())
            current = ""
        current += sentence
        while len(current) > max_chars:  # a single sentence longer than a chunk
            pieces.append(current[:max_chars])
            current = current[max_chars:]
    if current.strip():
        pieces.append(current.strip())
    return pieces
