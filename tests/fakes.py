"""Hand-written deterministic fakes (no MagicMock): they behave, so tests assert behaviour."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from functions.common.records import Passage
from functions.generate.core import Completion, Message
from functions.generate.paced_engine import PacedEngine

REPO = Path(__file__).resolve().parents[1]


def demo_model_dir() -> Path:
    """The demo model in the checkout's cache (`make setup` converts it; tests do if missing)."""
    from functions.common.settings import Settings
    from functions.generate.gguf_import import ensure_demo_model

    model_dir = Settings(model_cache=REPO / ".wxassist" / "models").model_dir()
    ensure_demo_model(model_dir)
    return model_dir


class EchoEngine:
    """Answers with a fixed text plus the number of passages it saw; records every call."""

    model_name = "echo"

    def __init__(self, answer: str = "七天无理由退货。"):
        self.answer = answer
        self.calls: list[tuple[list[Message], int]] = []

    def count_tokens(self, text: str) -> int:
        return len(text)

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        self.calls.append((list(messages), max_new_tokens))
        text = self.answer[:max_new_tokens]
        prompt_tokens = sum(len(message["content"]) for message in messages)
        return Completion(text, prompt_tokens, len(text), truncated=len(self.answer) > max_new_tokens)


class GatedEngine(EchoEngine):
    """Answers once its gate (a ``threading.Event`` the test holds) opens: a request stays at the
    engine for as long as a test needs, however busy the machine is."""

    def __init__(self, answer: str = "七天无理由退货。", gate: threading.Event | None = None):
        super().__init__(answer=answer)
        self.gate = gate or threading.Event()

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        if not self.gate.wait(120):
            raise TimeoutError("the test never opened the engine's gate")
        return super().complete(messages, max_new_tokens)


class ListSearch:
    """A search backend that returns fixed best-first lists for each side."""

    def __init__(self, keyword: Sequence[Passage], dense: Sequence[Passage] = ()):
        self.keyword = list(keyword)
        self.dense = list(dense)
        self.limits: list[int] = []

    def keyword_search(self, query: str, limit: int) -> list[Passage]:
        self.limits.append(limit)
        return self.keyword[:limit]

    def dense_search(self, query: str, limit: int, vector=None) -> list[Passage]:
        return self.dense[:limit]


def passage(doc: str, index: int, score: float = 1.0, title: str | None = None, text: str = "正文") -> Passage:
    return Passage(f"{doc}:{index}", doc, f"{doc}.md", title or doc, text, score)


class SleepyEngine(PacedEngine):
    """Takes as long as the question says: "…#12" answers after 12 s. For deadline tests."""

    def pace_s(self, messages: Sequence[Message]) -> float:
        import re

        marker = re.search(r"#(\d+(?:\.\d+)?)", messages[-1]["content"])
        return float(marker.group(1)) if marker else 0.0


async def inline(call, *args, **kwargs):
    """Runs a blocking store call in the event loop itself: with a ManualClock, a scenario then
    has no threads and runs the same way every time."""
    return call(*args, **kwargs)
