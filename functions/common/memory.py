"""Conversation memory: each user's last turns, per account, in the shared state store.

Keys derive only from the verified, decrypted FromUserName (hashed), never from message text
or model output, so nothing a user writes can make the service read another user's memory.
The newest ``max_turns`` turns are kept for ``ttl_s`` after the last one; which of them fit the
prompt is decided by generate, which can count tokens (``functions/generate/core.py``).
"""

from __future__ import annotations

import json

from functions.common.clock import Clock
from functions.common.records import InboundMessage, Turn
from functions.common.state import StateStore, update_value, user_digest

KEY_PREFIX = "wxa:memory:"
MAX_TURN_CHARS = 2000  # one turn's question or answer, as stored: a bound on what a user can make us keep


def memory_key(account: str, user: str) -> str:
    return f"{KEY_PREFIX}{account}:{user_digest(user)}"


class ConversationMemory:
    def __init__(self, store: StateStore, clock: Clock, *, ttl_s: float, max_turns: int):
        self._store = store
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_turns = max_turns

    def recall(self, message: InboundMessage) -> tuple[Turn, ...]:
        """The user's turns, oldest first."""
        raw = self._store.get(memory_key(message.account, message.from_user))
        return () if raw is None else tuple(Turn(q, a) for q, a, _ in json.loads(raw))

    def remember(self, message: InboundMessage, question: str, answer: str) -> None:
        if self._max_turns <= 0:
            return
        turn = [question[:MAX_TURN_CHARS], answer[:MAX_TURN_CHARS], self._clock.now_s()]

        def appended(raw: str | None) -> str:  # two messages of one user may finish at once
            turns = [] if raw is None else json.loads(raw)
            return json.dumps((turns + [turn])[-self._max_turns :], ensure_ascii=False)

        update_value(self._store, memory_key(message.account, message.from_user), appended, self._ttl_s)

    def forget(self, message: InboundMessage) -> None:
        self._store.delete(memory_key(message.account, message.from_user))
