"""Conversation memory: each user's last turns, per account, in the shared state store.

Keys derive only from the verified, decrypted FromUserName (hashed), never from message text
or model output, so nothing a user writes can make the service read another user's memory.
The newest ``max_turns`` turns are kept for ``ttl_s`` after the last one; which of them fit the
prompt is decided by generate, which can count tokens (``functions/generate/core.py``).
"""

from __future__ import annotations

import hashlib
import json

from functions.common.clock import Clock
from functions.common.errors import StateContention
from functions.common.records import InboundMessage, Turn
from functions.common.state import StateStore

KEY_PREFIX = "wxa:memory:"
CAS_ATTEMPTS = 20
MAX_TURN_CHARS = 2000  # one turn's question or answer, as stored: a bound on what a user can make us keep


def memory_key(account: str, user: str) -> str:
    return f"{KEY_PREFIX}{account}:{hashlib.sha256(user.encode('utf-8')).hexdigest()[:32]}"


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
        key = memory_key(message.account, message.from_user)
        turn = [question[:MAX_TURN_CHARS], answer[:MAX_TURN_CHARS], self._clock.now_s()]
        for _ in range(CAS_ATTEMPTS):  # two messages of one user may finish at once
            raw = self._store.get(key)
            turns = [] if raw is None else json.loads(raw)
            value = json.dumps((turns + [turn])[-self._max_turns :], ensure_ascii=False)
            if raw is None and self._store.set_if_absent(key, value, self._ttl_s):
                return
            if raw is not None and self._store.compare_and_set(key, raw, value, self._ttl_s):
                return
        raise StateContention(f"memory kept changing; gave up after {CAS_ATTEMPTS} attempts")

    def forget(self, message: InboundMessage) -> None:
        self._store.delete(memory_key(message.account, message.from_user))
