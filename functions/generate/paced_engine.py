"""A generator with no model: a fixed answer at a chosen pace.

For load tests and capacity planning (``wxassist bench burst``): it isolates what the rest of
the pipeline does under a burst (claims, deliveries, the outbox, pushes) from how fast a GPU
is, the way a real engine behind ``max_ongoing_requests`` would hold a request for its
generation time. Never configured for users: ``GenerateServer`` uses it only when told to.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from functions.generate.core import Completion, Message

DEFAULT_ANSWER = "青禾家居支持7天无理由退货。"
# A load test tags each question ("〔17〕"); the answer carries the tag back, so what a user
# received can be counted per message, not per user (functions/emulator/emulator.py).
MESSAGE_TAG = re.compile(r"〔[0-9A-Za-z-]{1,32}〕")


class PacedEngine:
    model_name = "paced"
    languages = ("zh", "en")  # it stands in for a production model

    def __init__(self, seconds_per_answer: float = 0.5, answer: str = DEFAULT_ANSWER):
        if seconds_per_answer < 0:
            raise ValueError("seconds_per_answer must be >= 0")
        self.seconds_per_answer = seconds_per_answer
        self.answer = answer

    def count_tokens(self, text: str) -> int:
        return len(text)

    def pace_s(self, messages: Sequence[Message]) -> float:
        return self.seconds_per_answer

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        time.sleep(self.pace_s(messages))  # blocks its request as real generation would
        text = self.answer[:max_new_tokens]
        # The tag is bookkeeping, not an answer's words: outside the token budget, so a tagged
        # burst cuts answers exactly as an untagged one would.
        tag = MESSAGE_TAG.search(messages[-1]["content"]) if messages else None
        prompt_chars = sum(len(message["content"]) for message in messages)
        return Completion(text + (tag.group(0) if tag else ""), prompt_chars, len(text),
                          truncated=len(self.answer) > max_new_tokens)
