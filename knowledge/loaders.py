"""Turn files into documents: Markdown, text, HTML, and FAQ files (JSONL or CSV of
question, answer). Each loader returns a title and either prose or FAQ pairs."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from functions.common.errors import KnowledgeBaseError

PROSE_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm"})
FAQ_SUFFIXES = frozenset({".jsonl", ".csv"})
SUPPORTED_SUFFIXES = PROSE_SUFFIXES | FAQ_SUFFIXES


@dataclass(frozen=True)
class Document:
    source: str  # stable name: the path relative to the ingested root
    title: str
    text: str = ""  # prose documents
    faq: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # FAQ documents

    def content_for_hash(self) -> str:
        return json.dumps([self.title, self.text, self.faq], ensure_ascii=False)


def load_document(path: Path, source: str) -> Document:
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KnowledgeBaseError(f"{source}: not UTF-8 text") from exc
    if suffix in (".md", ".markdown"):
        return Document(source, _markdown_title(raw) or path.stem, text=raw)
    if suffix == ".txt":
        first_line = raw.strip().splitlines()[0] if raw.strip() else path.stem
        return Document(source, first_line.strip()[:120], text=raw)
    if suffix in (".html", ".htm"):
        title, text = html_to_text(raw)
        return Document(source, title or path.stem, text=text)
    if suffix == ".jsonl":
        return Document(source, path.stem, faq=tuple(_jsonl_pairs(raw, source)))
    if suffix == ".csv":
        return Document(source, path.stem, faq=tuple(_csv_pairs(raw, source)))
    raise KnowledgeBaseError(f"{source}: unsupported file type {suffix or '(none)'}")


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def _jsonl_pairs(raw: str, source: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KnowledgeBaseError(f"{source}:{number}: not valid JSON") from exc
        pairs.append(_pair(record, f"{source}:{number}"))
    return pairs


def _csv_pairs(raw: str, source: str) -> list[tuple[str, str]]:
    reader = csv.DictReader(io.StringIO(raw))
    if not reader.fieldnames or not {"question", "answer"} <= set(reader.fieldnames):
        raise KnowledgeBaseError(f"{source}: a FAQ CSV needs a header with question,answer")
    return [_pair(row, f"{source}:{number}") for number, row in enumerate(reader, start=2)]


def _pair(record: object, where: str) -> tuple[str, str]:
    if not isinstance(record, dict):
        raise KnowledgeBaseError(f"{where}: expected an object with question and answer")
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str) or not question.strip() or not answer.strip():
        raise KnowledgeBaseError(f"{where}: question and answer must be non-empty text")
    return question.strip(), answer.strip()


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "br", "tr", "section", "article"})
    SKIPPED = frozenset({"script", "style", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.parts: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack.append(tag)
        if tag in self.BLOCKS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop() != tag:
            pass
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if any(tag in self.SKIPPED for tag in self._stack):
            return
        if self._stack and self._stack[-1] == "title":
            self.title += data.strip()
            return
        self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [" ".join(line.split()) for line in "".join(extractor.parts).splitlines()]
    return extractor.title, "\n".join(line for line in lines if line)
