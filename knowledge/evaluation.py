"""The operator's acceptance test: labelled questions, what the service answered, and verdicts.

A question file is JSONL, one question per line: ``{"q": "…", "doc": "returns.md"}`` (the
document the answer must come from, as ``wxassist kb ingest`` named it: the file name, or the
path under the folder ingested) or ``{"q": "…", "expect": "not_found"}`` (the documents do not
answer it; the service must say so). ``doc`` may be a list when several documents answer.

Verdicts: ``right`` (answered from the expected document: the first one the answer quotes or
drew on), ``wrong_source`` (answered from another, or by a route that is not the documents),
``not_found`` (said "not found" although a document answers), ``correct_not_found`` and
``false_answer`` (answered a question the documents do not answer). The summary gives the
shares the acceptance criteria are written in, and latency as WeChat's first delivery sees it.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from functions.common.errors import ConfigurationError

NOT_FOUND = "not_found"


@dataclass(frozen=True)
class LabelledQuestion:
    q: str
    docs: tuple[str, ...] = ()  # empty: the documents do not answer it

    @property
    def answerable(self) -> bool:
        return bool(self.docs)


@dataclass(frozen=True)
class Outcome:
    """What the service did with one question."""

    question: str
    expected: tuple[str, ...]
    route: str
    source: str  # how the answer was made: model, extract, faq, cache, tool, not_found, or a reply
    documents: tuple[str, ...]
    answer: str
    latency_s: float
    verdict: str


def read_questions(path: Path) -> list[LabelledQuestion]:
    questions = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the questions {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigurationError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        text = row.get("q") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f'{path}:{number}: needs "q", the question as a customer would send it')
        if row.get("expect") == NOT_FOUND:
            questions.append(LabelledQuestion(text))
            continue
        docs = row.get("doc")
        docs = [docs] if isinstance(docs, str) else docs
        if not docs or not all(isinstance(doc, str) and doc for doc in docs):
            raise ConfigurationError(f'{path}:{number}: needs "doc" (the document that answers it) '
                                     'or "expect": "not_found"')
        questions.append(LabelledQuestion(text, tuple(docs)))
    if not questions:
        raise ConfigurationError(f"{path} holds no questions")
    return questions


def verdict(question: LabelledQuestion, source: str, documents: Sequence[str]) -> str:
    said_not_found = source == NOT_FOUND
    if not question.answerable:
        return "correct_not_found" if said_not_found else "false_answer"
    if said_not_found:
        return NOT_FOUND
    return "right" if documents and _same_document(documents[0], question.docs) else "wrong_source"


def _same_document(found: str, expected: Sequence[str]) -> bool:
    """Names as ingested: a file ingested alone is named by its file name, one in a folder by
    its path under the folder; either matches. An FAQ entry may be named ``faq.jsonl#question``."""
    found = found.split("#", 1)[0]
    return any(found == doc.split("#", 1)[0] or found.endswith("/" + doc.split("#", 1)[0]) for doc in expected)


def summarise(outcomes: Sequence[Outcome], window_s: float) -> dict:
    answerable = [o for o in outcomes if o.expected]
    unanswerable = [o for o in outcomes if not o.expected]
    latencies = sorted(o.latency_s for o in outcomes)
    counts = Counter(o.verdict for o in outcomes)

    def share(count: int, total: int) -> float | None:
        return round(count / total, 3) if total else None

    return {
        "questions": len(outcomes),
        "answerable": len(answerable),
        "out_of_kb": len(unanswerable),
        "right_share": share(counts["right"], len(answerable)),
        "not_found_share": share(counts[NOT_FOUND], len(answerable)),
        "wrong_source_share": share(counts["wrong_source"], len(answerable)),
        "false_answer_share": share(counts["false_answer"], len(unanswerable)),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p90_s": round(latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))], 3) if latencies else None,
        "passive_share": share(sum(o.latency_s <= window_s for o in outcomes), len(outcomes)),
        "sources": dict(Counter(o.source for o in outcomes)),
        "verdicts": dict(counts),
    }


def as_json(outcomes: Sequence[Outcome], summary: dict) -> str:
    return json.dumps({"summary": summary, "questions": [asdict(o) for o in outcomes]}, ensure_ascii=False)


def as_table(outcomes: Sequence[Outcome]) -> str:
    lines = [f"{'verdict':17} {'route':10} {'source':9} {'latency':>8}  question → document"]
    for o in outcomes:
        where = ", ".join(o.documents) or "-"
        lines.append(f"{o.verdict:17} {o.route:10} {o.source:9} {o.latency_s:>7.2f}s  {o.question} → {where}")
    return "\n".join(lines)


def summary_lines(summary: dict) -> str:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    return (f"{summary['answerable']} answerable: right {pct(summary['right_share'])}, not found "
            f"{pct(summary['not_found_share'])}, wrong source {pct(summary['wrong_source_share'])}\n"
            f"{summary['out_of_kb']} out of the documents: false answers {pct(summary['false_answer_share'])}\n"
            f"latency p50 {summary['p50_s']} s, p90 {summary['p90_s']} s; answered inside the first delivery "
            f"{pct(summary['passive_share'])}\nhow answers were made: "
            + ", ".join(f"{name} {count}" for name, count in sorted(summary["sources"].items())))


_VERDICT_COLOURS = {"right": "#2e7d32", "correct_not_found": "#66bb6a", NOT_FOUND: "#f9a825",
                    "wrong_source": "#ef6c00", "false_answer": "#c62828"}


def as_html(outcomes: Sequence[Outcome], summary: dict, title: str) -> str:
    """A report a person reads: the summary, a bar chart of verdicts (inline SVG, nothing
    fetched), and every question with its answer."""
    counts = summary["verdicts"]
    total = max(sum(counts.values()), 1)
    bars, y = [], 10
    for name, colour in _VERDICT_COLOURS.items():
        width = 400 * counts.get(name, 0) / total
        bars.append(f'<text x="0" y="{y + 14}" font-size="13">{name}</text>'
                    f'<rect x="150" y="{y}" width="{width:.1f}" height="18" fill="{colour}"/>'
                    f'<text x="{155 + width:.1f}" y="{y + 14}" font-size="13">{counts.get(name, 0)}</text>')
        y += 26
    rows = "\n".join(
        f'<tr><td style="color:{_VERDICT_COLOURS.get(o.verdict, "#000")}">{o.verdict}</td>'
        f"<td>{html.escape(o.question)}</td><td>{html.escape(', '.join(o.expected) or 'not found')}</td>"
        f"<td>{o.route}</td><td>{o.source}</td><td>{html.escape(', '.join(o.documents))}</td>"
        f"<td>{o.latency_s:.2f}</td><td>{html.escape(o.answer)}</td></tr>" for o in outcomes)
    return f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}}pre{{font-size:14px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<pre>{html.escape(summary_lines(summary))}</pre>
<svg width="600" height="{y + 10}" role="img" aria-label="verdicts">{''.join(bars)}</svg>
<table><tr><th>verdict</th><th>question</th><th>expected</th><th>route</th><th>source</th><th>documents</th>
<th>seconds</th><th>answer</th></tr>
{rows}
</table></body></html>
"""
