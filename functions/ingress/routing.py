"""One message's way to its reply, run once per message by its job: the length cap, the rate
limits, the outbox gate, "继续", the intent's route, and for knowledge and small talk the
answering stage (``answering.py``). Every failure becomes an apology, never a lost message."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from functions.common.continuation import is_continue_request
from functions.common.records import InboundMessage, Reply, Route
from functions.encrypt.core import NO_REPLY
from functions.ingress.answering import KnowledgeAnswers
from functions.ingress.conversation import Admission, Conversation, OutboxGate
from functions.ingress.http import log_failure
from observability.logs import hashed_user, log_event
from observability.message_telemetry import MessageTelemetry


@dataclass(frozen=True)
class RoutingRules:
    """The settings the router reads, by name."""

    max_question_chars: int
    passive_only: frozenset[str]  # accounts whose overflow is "继续"
    continue_keyword: str
    handoff_transfer: bool  # hand the user to WeChat's human agents on a handoff intent
    handoff_text: str
    outbox_full_text: str
    failure_text: str


class MessageRouter:
    def __init__(self, rules: RoutingRules, admission: Admission, outbox_gate: OutboxGate,
                 conversation: Conversation, answers: KnowledgeAnswers, intent: Any, encrypt: Any,
                 telemetry: MessageTelemetry):
        self._rules = rules
        self._admission = admission
        self._outbox_gate = outbox_gate
        self._conversation = conversation
        self._answers = answers
        self._intent = intent
        self._encrypt = encrypt
        self._telemetry = telemetry

    async def answer_job(self, message: InboundMessage, max_new_tokens: int, deadline_s: float | None = None) -> Reply:
        """One message's job, run once however many deliveries it gets: traced and logged."""
        started_s = time.monotonic()
        with self._telemetry.answer_span(message):
            reply, details = await self.route(message, max_new_tokens, deadline_s)
            self._telemetry.answered(details, started_s, deadline_s)
        log_event(
            "answered",
            account=message.account,
            user=hashed_user(message.from_user),
            msg_id=message.msg_id,
            msg_type=message.msg_type,
            parts=len(reply.parts),
            budget=max_new_tokens,
            elapsed_ms=round((time.monotonic() - started_s) * 1000),
            **details,
        )
        return reply

    async def route(
        self, message: InboundMessage, max_new_tokens: int, deadline_s: float | None = None
    ) -> tuple[Reply, dict[str, Any]]:
        """The reply, and what the log line should say about how it was made."""
        rules = self._rules
        details: dict[str, Any] = {"route": "error"}
        if message.content and len(message.content) > rules.max_question_chars:  # before anything reads it
            message = dataclasses.replace(message, content=message.content[: rules.max_question_chars])
        try:
            refused = await self._admission.refusal(message)
            if refused is not None:
                details["route"] = "limited"
                return await self._encrypt.text_reply.remote(message, refused), details
            if await self._outbox_gate.full(message):
                details["route"] = "outbox_full"
                return await self._encrypt.text_reply.remote(message, rules.outbox_full_text), details
            if message.account in rules.passive_only and is_continue_request(message, rules.continue_keyword):
                details["route"] = "continue"
                return await self._conversation.next_part(message), details
            intent = await self._intent.classify.remote(message)
            details["route"] = intent.route.value
            if intent.forget_user:
                await self._conversation.forget(message, intent)
            if intent.route is Route.IGNORE:
                return NO_REPLY, details
            if intent.route is Route.HANDOFF and rules.handoff_transfer:
                return await self._encrypt.handoff_reply.remote(message, rules.handoff_text), details
            if intent.reply is not None:
                if intent.route is Route.TOOL:
                    details["answer_source"] = "tool"
                return await self._encrypt.text_reply.remote(message, intent.reply), details
            return await self._answers.answer(message, intent, max_new_tokens, details, deadline_s), details
        except Exception as exc:  # the user gets an apology, WeChat gets a 200, the log the cause
            log_failure("answer", exc)
            details["error"] = type(exc).__name__
            try:
                return await self._encrypt.text_reply.remote(message, rules.failure_text), details
            except Exception as second:
                log_failure("failure reply", second)
                return NO_REPLY, details
