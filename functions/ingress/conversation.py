"""The conversation's stages in the ingress: admission (rate limits), the outbox gate (too
many answers waiting to be pushed), and the conversation itself (memory, "继续" for
passive-only accounts). Each is a small collaborator the Ingress deployment is given; none
may fail a reply: a store outage lets the message through and the answer go on without
context."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from functions.common.continuation import ContinuationStore, continued_text
from functions.common.limits import RateLimiter
from functions.common.memory import ConversationMemory
from functions.common.outbox import Outbox
from functions.common.records import InboundMessage, Intent, Reply, Route, Turn
from functions.ingress.http import log_failure
from observability import metrics
from observability.logs import audit_event, hashed_user, log_event


class Admission:
    """The friendly refusal for a user or account over its rate limit."""

    def __init__(self, limiter: RateLimiter, limited_text: dict[str, str]):
        self._limiter = limiter
        self._limited_text = limited_text

    async def refusal(self, message: InboundMessage) -> str | None:
        """The refusal's text; None to go on. Events are not limited (WeChat sends them, not
        the user's typing)."""
        if message.msg_type == "event":
            return None
        try:
            admission = await asyncio.to_thread(self._limiter.admit, message)
        except Exception as exc:  # limits protect the GPU; a store outage must not silence users
            log_failure("rate limit", exc)
            return None
        if admission.allowed:
            return None
        audit_event("limited", scope=admission.scope, retry_after_s=round(admission.retry_after_s, 1),
                    account=message.account, user=hashed_user(message.from_user), msg_id=message.msg_id)
        return self._limited_text[admission.scope]


class OutboxGate:
    """Past ``max_pending`` answers waiting to be pushed, a push account's new question gets a
    "too busy, ask again" reply and no job. Answers already promised are never refused the
    outbox; a store outage refuses nothing. The backlog is read at most once a second."""

    def __init__(self, outbox: Outbox, passive_only: set[str], max_pending: int):
        self._outbox = outbox
        self._passive_only = passive_only
        self._max_pending = max_pending
        self._seen = (0, -1.0)  # (backlog, time.monotonic() it was read)

    async def full(self, message: InboundMessage) -> bool:
        if message.account in self._passive_only or message.msg_type == "event":
            return False
        backlog, read_at = self._seen
        if time.monotonic() - read_at > 1.0 or read_at < 0:
            try:
                backlog = await asyncio.to_thread(self._outbox.backlog)
            except Exception as exc:  # a store outage refuses nothing, and is not asked again at once
                log_failure("outbox backlog", exc)
                backlog = 0
            self._seen = (backlog, time.monotonic())
        if backlog < self._max_pending:
            return False
        metrics.OUTBOX_REFUSALS.inc()
        audit_event("outbox_full", account=message.account, backlog=backlog, msg_id=message.msg_id)
        return True


@dataclass(frozen=True)
class ContinueTexts:
    hint: str  # after a part, when more are held
    pending: str  # the answer is still being prepared
    empty: str  # nothing held
    wait_s: float  # how long "继续" waits for an answer still being prepared


class Conversation:
    """A user's turns (memory) and, on passive-only accounts, the answer parts held for "继续"."""

    def __init__(self, memory: ConversationMemory, continuations: ContinuationStore, encrypt: Any,
                 texts: ContinueTexts):
        self._memory = memory
        self._continuations = continuations
        self._encrypt = encrypt  # the encrypt handle: "继续" replies are parts of an answer
        self._texts = texts

    async def recall(self, message: InboundMessage) -> tuple[Turn, ...]:
        try:
            return await asyncio.to_thread(self._memory.recall, message)
        except Exception as exc:  # an answer without context beats no answer
            log_failure("recall", exc)
            return ()

    async def remember(self, message: InboundMessage, question: str, answer: str) -> None:
        try:
            await asyncio.to_thread(self._memory.remember, message, question, answer)
        except Exception as exc:
            log_failure("remember", exc)

    async def forget(self, message: InboundMessage, intent: Intent) -> None:
        """/reset clears the conversation; unsubscribing also drops answers held for 继续."""
        await asyncio.to_thread(self._memory.forget, message)
        if intent.route is Route.IGNORE:
            await asyncio.to_thread(self._continuations.forget, message)
        log_event("forgotten", account=message.account, user=hashed_user(message.from_user), reason=intent.reason)

    async def expect_part(self, message: InboundMessage, job_id: str) -> None:
        """An answer for this user is coming later: "继续" waits for it meanwhile."""
        await asyncio.to_thread(self._continuations.expect, message, job_id)

    async def next_part(self, message: InboundMessage) -> Reply:
        """"继续" on a passive-only account: the next held part, waiting a while for an answer
        still being prepared (within this message's own delivery windows)."""
        give_up_at = time.monotonic() + self._texts.wait_s
        part = await asyncio.to_thread(self._continuations.take, message)
        while part.kind == "pending" and time.monotonic() < give_up_at:
            await asyncio.sleep(0.25)
            part = await asyncio.to_thread(self._continuations.take, message)
        if part.kind == "part":
            return await self._encrypt.part_reply.remote(message, continued_text(part, self._texts.hint))
        text = self._texts.pending if part.kind == "pending" else self._texts.empty
        return await self._encrypt.text_reply.remote(message, text)

    async def pending_reply(self, message: InboundMessage) -> Reply:
        """What a passive-only account's last delivery says while the answer is still coming."""
        return await self._encrypt.text_reply.remote(message, self._texts.pending)


FOLLOW_UP = re.compile(r"^(那|那么|还有|另外|它|他|她|这个|那个|这|那些|这些|and\b|what about)|呢[？?]?$", re.IGNORECASE)


def retrieval_query(question: str, history: tuple[Turn, ...], short_chars: int = 12) -> str:
    """A short follow-up ("那运费呢？", "它多少钱") names too little to retrieve by: it is
    searched together with the question before it. Standalone questions are searched as asked."""
    bare = question.strip()
    if not history or len(bare) >= short_chars or not FOLLOW_UP.search(bare):
        return question
    return f"{history[-1].question} {question}"
