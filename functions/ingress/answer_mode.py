"""How a knowledge question is answered: by the model, or by quoting the documents.

Per account (``answer_mode``): ``generate`` always asks the model; ``extract`` always quotes the
best sentences of the documents retrieval found (instantly, no GPU); ``auto`` (the default)
asks the model when it writes the question's language and a short answer fits in the time
left at its measured pace, and otherwise quotes at once. So on the embedded default (SmolLM2,
English only, on CPU) a Chinese question is answered by a quote in well under a second, and a
DeepSeek or Qwen model on a GPU writes the answer, grounded as before.

What the model can do comes from the generate deployment's ``describe()`` (its languages and
tokens per second), read at most every ``refresh_s``; when it cannot be read, ``auto`` quotes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from functions.common.clock import Clock
from functions.common.text import question_language

# The shortest answer worth generating: below this, the quote says more.
MIN_ANSWER_TOKENS = 24
REFRESH_S = 30.0

log = logging.getLogger(__name__)


class AnswerModes:
    def __init__(self, modes: Mapping[str, str], describe: Callable[[], Awaitable[dict[str, Any]]], clock: Clock, *,
                 refresh_s: float = REFRESH_S, min_answer_tokens: int = MIN_ANSWER_TOKENS):
        self._modes = dict(modes)
        self._describe = describe
        self._clock = clock
        self._refresh_s = refresh_s
        self._min_answer_tokens = min_answer_tokens
        self._model: dict[str, Any] | None = None
        self._read_at = float("-inf")

    def mode(self, account: str) -> str:
        return self._modes.get(account, "auto")

    async def generates(self, account: str, question: str, seconds_left: float | None) -> bool:
        """Whether this question is for the model (else: quote). ``seconds_left``: until the
        answer must be back for the passive reply, None when there is no such deadline."""
        mode = self.mode(account)
        if mode != "auto":
            return mode == "generate"
        model = await self._model_described()
        if model is None or question_language(question) not in model.get("languages", ()):
            return False
        if seconds_left is None:
            return True
        tokens_per_s = float(model.get("tokens_per_s") or 0.0)
        return tokens_per_s > 0 and self._min_answer_tokens / tokens_per_s <= seconds_left

    async def _model_described(self) -> dict[str, Any] | None:
        now = self._clock.now_s()
        if now - self._read_at >= self._refresh_s:
            self._read_at = now
            try:
                self._model = await self._describe()
            except Exception as exc:  # generate not up (yet): quote until it is
                log.warning("generate could not be described (%s): auto answers quote", type(exc).__name__)
                self._model = None
        return self._model
