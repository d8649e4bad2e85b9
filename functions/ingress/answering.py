"""Knowledge questions and small talk in the ingress: the FAQ fast path and the answer cache
(through retrieve), retrieval's verdict, the account's answer mode, the model or the quote, and
when generate's queue is full, a promise and the answer later through the account's overflow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from functions.common.clock import Clock
from functions.common.ledger import dedupe_digest
from functions.common.records import Answer, InboundMessage, Intent, Reply, Route
from functions.ingress.answer_mode import AnswerModes
from functions.ingress.conversation import Conversation, retrieval_query
from functions.ingress.http import log_failure
from functions.ingress.overflow import Overflow
from observability import metrics
from observability.logs import audit_event, hashed_user, log_event

# A replica lost mid-answer is retried once: a question that itself kills replicas (an OOM)
# must not take down a third.
GENERATE_ATTEMPTS = 2


@dataclass(frozen=True)
class AnswerTexts:
    no_answer: str  # not in the documents
    quote_intro: str  # "以下内容摘自《{titles}》："
    failure: str  # an apology
    outbox_full: str  # too busy to promise an answer
    busy: dict[str, str]  # the promise of a later answer: "push" or "held" (继续)


class KnowledgeAnswers:
    def __init__(self, retrieve: Any, generate: Any, encrypt: Any, conversation: Conversation,
                 answer_modes: AnswerModes, overflow: Callable[[str], Overflow], clock: Clock, texts: AnswerTexts, *,
                 faq_accounts: set[str], cache_accounts: set[str], passive_only: set[str], max_deferred: int,
                 deferred_ttl_s: float, in_background: Callable[[Any], None]):
        from ray.exceptions import RayActorError  # here: the CLI need not load Ray
        from ray.serve.exceptions import BackPressureError

        self._retrieve = retrieve
        self._generate = generate
        self._encrypt = encrypt
        self._conversation = conversation
        self._answer_modes = answer_modes
        self._overflow = overflow
        self._clock = clock
        self._texts = texts
        self._faq_accounts = faq_accounts
        self._cache_accounts = cache_accounts
        self._passive_only = passive_only
        self._max_deferred = max_deferred
        self._deferred_ttl_s = deferred_ttl_s
        self._deferred_waiting = 0
        self._in_background = in_background
        self._generate_full = BackPressureError
        self._replica_lost = RayActorError  # died mid-call (crashed, or its node reclaimed past the drain deadline)

    async def answer(
        self, message: InboundMessage, intent: Intent, max_new_tokens: int, details: dict[str, Any],
        deadline_s: float | None = None,
    ) -> Reply:
        """A knowledge question or small talk: from the FAQ, the answer cache or the model."""
        question = intent.query or ""
        history = await self._conversation.recall(message)
        details["turns"] = len(history)
        # Knowledge answers only; a follow-up's answer depends on the conversation: not served
        # from, or put in, the cache.
        caching = intent.route is Route.KNOWLEDGE and message.account in self._cache_accounts and not history
        passages: list = []
        quote = None
        if intent.route is Route.KNOWLEDGE:
            found = await self._retrieve.find.remote(
                question, retrieval_query(question, history), message.account in self._faq_accounts,
                message.account if caching else None, intent.query_vector,
            )
            if found.answer:  # curated or cached: no GPU time
                details.update(grounding=found.kind, answer_source=found.kind, documents=list(found.documents))
                await self._conversation.remember(message, question, found.answer)
                return await self._encrypt.text_reply.remote(message, found.answer, found.sources)
            passages, quote = list(found.passages), found.quote
            details.update(passages=len(passages), answerable_p=found.confidence)
            if not passages or not found.answerable:  # retrieval's evidence: not in the documents
                details["answer_source"] = "not_found"
                return await self._encrypt.text_reply.remote(message, self._texts.no_answer)
            seconds_left = deadline_s - self._clock.now_s() if deadline_s is not None else None
            if quote is not None and not await self._answer_modes.generates(message.account, question, seconds_left):
                details.update(grounding="extractive", answer_source="extract", documents=list(quote.documents))
                return await self._answer_reply(message, question, Answer(quote.text, quote.titles,
                                                                          grounding="extractive"), passages, False)
        try:
            answer = await self._generate_answer(question, passages, max_new_tokens, history, deadline_s, quote)
        except self._generate_full:
            details["deferred"] = True
            return await self._defer(message, question, passages, history, caching, quote)
        details.update(grounding=answer.grounding, tokens_in=answer.tokens_in, tokens_out=answer.tokens_out,
                       truncated=answer.truncated, answer_source=_answer_source(answer),
                       documents=list(quote.documents) if answer.grounding == "extractive" and quote is not None
                       else [passage.source for passage in passages[:1] if answer.text])
        return await self._answer_reply(message, question, answer, passages, caching)

    async def _generate_answer(self, *args) -> Answer:
        """An answer is a pure function of its inputs, so one lost with its replica is asked
        for again: Serve routes the retry to a live replica (the drained node's replacement,
        or a restarted one). A full queue is not retried here; the callers defer on it."""
        for attempt in range(1, GENERATE_ATTEMPTS + 1):
            try:
                return await self._generate.answer.remote(*args)
            except self._replica_lost as exc:
                if attempt == GENERATE_ATTEMPTS:
                    raise
                log_event("generate_retried", attempt=attempt, error=type(exc).__name__)
                metrics.GENERATE_RETRIES.inc()
        raise AssertionError("unreachable")

    async def _answer_reply(self, message: InboundMessage, question: str, answer, passages: list, cache: bool) -> Reply:
        if not answer.text:
            return await self._encrypt.text_reply.remote(message, self._texts.no_answer)
        await self._conversation.remember(message, question, answer.text)
        if cache and answer.grounding == "generated":  # a quote costs nothing to make again
            self._in_background(self._retrieve.remember_answer.remote(
                message.account, question, answer.text, answer.sources, passages
            ))
        if answer.grounding == "extractive":  # marked as a quote, naming where it comes from
            intro = self._texts.quote_intro.format(titles="》《".join(answer.sources)) if answer.sources else ""
            return await self._encrypt.text_reply.remote(message, f"{intro}\n{answer.text}" if intro else answer.text)
        return await self._encrypt.text_reply.remote(message, answer.text, answer.sources)

    async def _defer(self, message: InboundMessage, question: str, passages: list, history, cache: bool,
                     quote=None) -> Reply:
        """Generate's queue is full: tell the user the answer is coming, and generate it as
        soon as there is room, in the background; it then goes out through the account's
        overflow (pushed, or held for "继续") like any answer the passive window missed."""
        if self._deferred_waiting >= self._max_deferred:  # promise nothing this replica could not keep
            audit_event("deferral_refused", account=message.account, user=hashed_user(message.from_user),
                        msg_id=message.msg_id)
            return await self._encrypt.text_reply.remote(message, self._texts.outbox_full)
        self._deferred_waiting += 1  # counted at the promise: a burst's deferrals all see it
        job_id = "deferred-" + dedupe_digest(message.dedupe_key)
        held = message.account in self._passive_only
        if held:  # a "继续" meanwhile waits for it instead of finding nothing
            await self._conversation.expect_part(message, job_id)
        audit_event("deferred", account=message.account, user=hashed_user(message.from_user), msg_id=message.msg_id)
        self._in_background(self._answer_later(message, job_id, question, passages, history, cache, quote))
        return await self._encrypt.text_reply.remote(message, self._texts.busy["held" if held else "push"])

    async def _answer_later(self, message: InboundMessage, job_id: str, question: str, passages: list, history,
                            cache: bool, quote=None) -> None:
        try:
            await self._answer_when_there_is_room(message, job_id, question, passages, history, cache, quote)
        finally:
            self._deferred_waiting -= 1

    async def _answer_when_there_is_room(self, message: InboundMessage, job_id: str, question: str, passages: list,
                                         history, cache: bool, quote=None) -> None:
        give_up_at = time.monotonic() + self._deferred_ttl_s
        pause_s = 0.5
        while True:
            try:
                answer = await self._generate_answer(question, passages, None, tuple(history), None, quote)
                reply = await self._answer_reply(message, question, answer, passages, cache)
                break
            except self._generate_full:
                if time.monotonic() + pause_s > give_up_at:
                    log_event("deferred_expired", account=message.account, msg_id=message.msg_id)
                    reply = await self._encrypt.text_reply.remote(message, self._texts.failure)
                    break
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, 8.0)
            except Exception as exc:  # the user was promised an answer: an apology beats silence
                log_failure("deferred answer", exc)
                reply = await self._encrypt.text_reply.remote(message, self._texts.failure)
                break
        await self._overflow(message.account).hold(message, job_id, reply.parts, 0)


def _answer_source(answer: Answer) -> str:
    """How the model's answer reached the user: its own text, or the quote that replaced it."""
    return {"generated": "model", "none": "model", "extractive": "extract"}.get(answer.grounding, "not_found")
