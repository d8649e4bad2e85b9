"""Reading the local span files (``WXA_TRACE_EXPORTER=file``): one message's spans and their
tree, so a developer needs no tracing backend to see where a message's time went
(``wxassist trace MSGID``, functions/cli/trace.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_spans(trace_dir: Path) -> Iterable[dict[str, Any]]:
    for path in sorted([*Path(trace_dir).glob("*.jsonl.1"), *Path(trace_dir).glob("*.jsonl")]):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a killed process
                    continue


def message_spans(trace_dir: Path, msg_id: str) -> list[dict[str, Any]]:
    """Every span of every trace that touched ``msg_id`` (the first delivery's and WeChat's
    retries'), oldest trace first, each trace's spans by start time."""
    spans = list(read_spans(trace_dir))
    traces = {span["trace_id"] for span in spans if span.get("attributes", {}).get("wechat.msg_id") == msg_id}
    chosen = [span for span in spans if span["trace_id"] in traces]
    first_start = {trace_id: min(s["start"] for s in chosen if s["trace_id"] == trace_id) for trace_id in traces}
    return sorted(chosen, key=lambda span: (first_start[span["trace_id"]], span["start"]))


def render_tree(spans: list[dict[str, Any]]) -> str:
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        by_trace[span["trace_id"]].append(span)
    out: list[str] = []
    for trace_id, members in by_trace.items():
        ids = {span["span_id"] for span in members}
        children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for span in members:  # a parent outside the file (an upstream caller) makes a root
            children[span["parent_id"] if span["parent_id"] in ids else None].append(span)
        origin = min(span["start"] for span in members)
        out.append(f"trace {trace_id}")
        for root in children[None]:
            links = [link["trace_id"] for link in root.get("links", [])]
            if links:
                out.append(f"  (a retry: linked to trace {', '.join(links)})")
        _walk(children, None, origin, 1, out)
    return "\n".join(out)


SHOWN = ("wechat.msg_id", "wxassist.route", "wxassist.intent", "wxassist.outcome",
         "wxassist.deliveries", "wxassist.grounding", "wxassist.passages", "wxassist.queue_wait_ms",
         "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "wxassist.truncated", "wxassist.push_outcome",
         "wechat.errcode", "error.type")


def _walk(children, parent_id, origin: float, depth: int, out: list[str]) -> None:
    for span in sorted(children[parent_id], key=lambda s: s["start"]):
        attributes = span.get("attributes", {})
        shown = " ".join(f"{key.split('.', 1)[1]}={attributes[key]}" for key in SHOWN if key in attributes)
        offset_ms = (span["start"] - origin) * 1000
        where = f" [{span['function']}]" if span.get("function") else ""
        out.append(f"{'  ' * depth}{span['name']:<10} +{offset_ms:8.1f} ms {span['duration_ms']:9.1f} ms{where}  {shown}".rstrip())
        _walk(children, span["span_id"], origin, depth + 1, out)
