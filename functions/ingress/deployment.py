"""The ingress deployment: the HTTP edge of the service. It reads WeChat's callback under a
cap, claims the message once, runs the conversation's stages (limits, continuation, memory,
routing, the answer and its deferral) through the functions' handles, and turns every failure
into a 4xx or an empty reply, never a 500. ``serve_app.compose_app`` builds it."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from functions.common.clock import Clock, SystemClock
from functions.common.continuation import ContinuationStore, is_continue_request
from functions.ingress.conversation import Admission, ContinueTexts, Conversation, OutboxGate, retrieval_query
from functions.ingress.delivery import DeliveryCoordinator, DeliveryPolicy
from functions.ingress.overflow import HeldOverflow, Overflow, PushOverflow
from functions.common.ledger import ClaimLedger, dedupe_digest
from functions.common.job_journal import JobJournal
from functions.common.limits import LimitPolicy, RateLimiter
from functions.common.memory import ConversationMemory
from functions.common.outbox import Outbox
from functions.common.records import Answer, InboundMessage, Intent, Outcome, Rejection, Reply, Route
from functions.common.settings import load_settings
from functions.common.state import open_state_store
from functions.encrypt.core import NO_REPLY
from functions.ingress.answer_mode import AnswerModes
from functions.ingress.handles import carrying_trace, fused_steps
from functions.ingress.http import http_app, log_failure, read_capped_body, rejected, unavailable
from observability import metrics
from observability.logs import audit_event, hashed_user, log_event
from observability.message_telemetry import MessageTelemetry
from observability.tracing import (ReportsSpans, configure_for, current_traceparent, detached_context,
                                   untraced)


# A "继续" waits on an answer still being generated; a pending mark older than this is
# presumed lost with its replica.
PENDING_STALE_S = 120.0
# A replica lost mid-answer is retried once: a question that itself kills replicas (an OOM)
# must not take down a third.
GENERATE_ATTEMPTS = 2


class Ingress(ReportsSpans):
    """Owns the HTTP edge: reads the body under a cap, calls the functions through their
    handles, and turns every failure into a 4xx or an empty reply, never a 500."""

    def __init__(
        self,
        decrypt,
        intent,
        retrieve,
        generate,
        encrypt,
        push,
        settings_overrides: dict[str, Any] | None = None,
        clock: Clock | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("ingress", settings)  # log lines with trace ids, and the tracer
        clock = self._clock = clock or SystemClock()
        store = open_state_store(settings.state_location(), clock)
        self._telemetry = MessageTelemetry(store, clock)
        self._metrics_publisher = metrics.replica_publisher("ingress", settings, store)  # other ingress replicas serve it too
        continuations = ContinuationStore(store, clock, ttl_s=settings.continuation_ttl_s, pending_stale_s=PENDING_STALE_S)
        self._admission = Admission(RateLimiter(store, clock, LimitPolicy(
            settings.user_burst, settings.user_per_min, settings.account_burst, settings.account_per_s
        )), {"user": settings.limited_user_text, "account": settings.limited_account_text})
        self._answer_modes = AnswerModes({name: account.answer_mode for name, account in settings.account_map().items()},
                                         lambda: untraced(self._generate).describe.remote(), clock)
        self._quote_intro = settings.quote_intro
        self._faq_accounts = {name for name, account in settings.account_map().items() if account.faq_fast_path}
        self._cache_accounts = {name for name, account in settings.account_map().items()
                                if account.answer_cache and settings.answer_cache}
        self._passive_only = {name for name, account in settings.account_map().items() if account.strategy == "passive-only"}
        outbox = Outbox(store, clock)
        self._outbox_gate = OutboxGate(outbox, self._passive_only, settings.outbox_max_pending)
        self._outbox_full_text = settings.outbox_full_text
        pushed = PushOverflow(outbox, clock, trace_carrier=current_traceparent)
        held = HeldOverflow(continuations, lambda message: self._conversation.pending_reply(message))

        def overflow(account: str) -> Overflow:
            return held if account in self._passive_only else pushed

        self._overflow = overflow
        from ray.exceptions import RayActorError  # here: the CLI need not load Ray
        from ray.serve.exceptions import BackPressureError

        self._generate_full = BackPressureError
        self._replica_lost = RayActorError  # died mid-call (crashed, or its node reclaimed past the drain deadline)
        self._busy_text = {"push": settings.busy_push_text, "held": settings.busy_held_text}
        self._deferred_ttl_s = settings.deferred_answer_ttl_s
        self._max_deferred = settings.max_deferred_answers
        self._deferred_waiting = 0
        self._max_question_chars = settings.max_question_chars
        self._max_new_tokens = settings.max_new_tokens
        self._first_window_s = settings.delivery_window_s

        self._delivery = DeliveryCoordinator(
            ClaimLedger(store, clock, ttl_s=settings.ledger_ttl_s, job_lease_s=settings.job_lease_s),
            overflow,
            DeliveryPolicy(window_s=settings.delivery_window_s, tokens_per_s=settings.generate_tokens_per_s),
            clock,
            self._answer_job,
            max_new_tokens=settings.max_new_tokens,
            lease_renew_s=settings.job_lease_s / 3,
            journal=JobJournal(store, clock, recheck_s=settings.job_lease_s),
            job_context=detached_context,  # a job outlives its delivery, but stays in the message's trace
            trace_carrier=current_traceparent,  # kept with the claim: retries link to the first
        )
        if decrypt is None:  # fused (compose_app passes None for all three): the cheap steps run here
            decrypt, intent, encrypt = fused_steps(settings_overrides)
        self._decrypt = carrying_trace(decrypt)
        self._intent = carrying_trace(intent)
        self._retrieve = carrying_trace(retrieve)
        self._generate = carrying_trace(generate)
        self._encrypt = carrying_trace(encrypt)
        self._push = push  # never called per message: jobs reach it through the outbox
        self._max_body_bytes = settings.max_body_bytes
        self._failure_text = settings.failure_text
        self._no_answer_text = settings.no_answer_text
        self._handoff_text = settings.handoff_text
        self._handoff_transfer = settings.handoff_transfer
        self._tasks: set[asyncio.Task] = set()  # intakes and background calls, kept until done
        self._recovery: asyncio.Task | None = None  # the journal watch (recover_orphans), once started
        self._recovery_every_s = settings.job_lease_s / 3
        self._continue_keyword = settings.continue_keyword
        self._conversation = Conversation(
            ConversationMemory(store, clock, ttl_s=settings.memory_ttl_s, max_turns=settings.memory_max_turns),
            continuations, self._encrypt, ContinueTexts(settings.continue_hint_text, settings.continue_pending_text,
                                                        settings.continue_empty_text, settings.continue_wait_s),
        )

    async def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve builds the HTTP app in the replica, after ``__init__``; routes are closures
        over this instance, so no class-based-view rewriting is involved."""
        await self.warm_up()
        self.watch_for_orphans()
        return http_app(self)

    def watch_for_orphans(self) -> None:
        """Every few seconds, take over jobs whose owner died (functions/common/job_journal.py).
        Started with the replica, and again by a callback if it ever stopped."""
        loop = asyncio.get_running_loop()
        if self._recovery is not None and not self._recovery.done() and self._recovery.get_loop() is loop:
            return

        async def watch() -> None:
            while True:
                await self._delivery.recover_orphans()
                await asyncio.sleep(self._recovery_every_s)

        self._recovery = asyncio.create_task(watch(), context=contextvars.Context())  # in no request's trace

    async def warm_up(self) -> None:
        """A handle sets up its router on first use (≈9 s was measured on 2 cores): do it
        before serving, so the application is ready only when every step can answer."""
        handles = (self._decrypt, self._intent, self._retrieve, self._generate, self._encrypt, self._push)
        await asyncio.gather(*(handle.ready.remote() for handle in handles))

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def metrics(self) -> Response:
        """Prometheus text: this replica's metrics and every other process's latest snapshot."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await asyncio.to_thread(self._telemetry.exposition), media_type=CONTENT_TYPE_LATEST)

    async def verify_url(self, account: str, request: Request) -> Response:
        try:
            result = await self._decrypt.verify_url.remote(account, dict(request.query_params))
        except Exception as exc:
            return unavailable("verify_url", exc)
        if isinstance(result, Rejection):
            return rejected(account, result)
        return PlainTextResponse(result)

    async def callback(self, account: str, request: Request) -> Response:
        started_s = time.monotonic()
        arrived_s = self._clock.now_s()  # WeChat's window for this delivery runs from here
        self.watch_for_orphans()
        body = await read_capped_body(request, self._max_body_bytes)
        if body is None:
            return rejected(account, Rejection(413, "BodyTooLarge", f"body exceeds {self._max_body_bytes} bytes"))
        # The message is in our hands now. WeChat hangs up after 5 s and Serve then cancels this
        # handler and its calls; a busy replica can take that long before the claim, and a
        # message whose every delivery was cancelled before its claim would be lost. So the
        # rest runs in a task of its own that a hang-up does not cancel.
        hung_up = asyncio.Event()
        intake = asyncio.create_task(
            self._intake(account, dict(request.query_params), body, started_s, arrived_s, hung_up,
                         dict(request.headers)),
            context=contextvars.Context(),
        )
        self._keep(intake)
        try:
            response, _ = await asyncio.shield(intake)
            return response
        except asyncio.CancelledError:
            hung_up.set()  # its reply would reach nobody: it must not count as served
            # The intake may have counted its reply as served just before the hang-up; the
            # reply never leaves this handler now, so that serving is taken back.
            self._keep(asyncio.create_task(self._retract_when_done(intake), context=contextvars.Context()))
            raise

    async def _retract_when_done(self, intake: asyncio.Task) -> None:
        try:
            _, delivered = await intake
            if delivered is not None:
                await self._delivery.retract(*delivered)
        except Exception as exc:
            log_failure("retract", exc)

    async def _intake(
        self, account: str, query: dict[str, str], body: bytes, started_s: float, arrived_s: float,
        hung_up: asyncio.Event, headers: dict[str, str],
    ) -> tuple[Response, tuple[InboundMessage, Outcome] | None]:
        with self._telemetry.delivery_span(account[:64], headers):  # one span per delivery; a caller's traceparent continues
            return await self._traced_intake(account, query, body, started_s, arrived_s, hung_up)

    async def _traced_intake(
        self, account: str, query: dict[str, str], body: bytes, started_s: float, arrived_s: float,
        hung_up: asyncio.Event,
    ) -> tuple[Response, tuple[InboundMessage, Outcome] | None]:
        """The response, and the delivery it reports (a passive reply it may have to retract)."""
        try:
            opened = await self._decrypt.open_callback.remote(account, query, body)
        except Exception as exc:  # a bug or a dead replica, not the sender's fault: WeChat retries
            self._telemetry.rejected(type(exc).__name__)
            return unavailable("open_callback", exc), None
        if isinstance(opened, Rejection):
            self._telemetry.rejected(opened.error)
            return rejected(account, opened), None
        self._telemetry.opened(opened)
        outcome = await self._delivery.deliver(opened, arrived_s=arrived_s, hung_up=hung_up)
        self._telemetry.delivered(outcome)
        log_event(
            "delivered",
            account=account,
            user=hashed_user(opened.from_user),
            msg_id=opened.msg_id,
            outcome=outcome.kind,
            delivery=outcome.deliveries,
            elapsed_ms=round((time.monotonic() - started_s) * 1000),
        )
        if outcome.passive_reply:
            return Response(outcome.reply.body, media_type=outcome.reply.content_type), (opened, outcome)
        if outcome.kind == "success":
            return Response(NO_REPLY.body, media_type=NO_REPLY.content_type), None
        # Still being answered: not an empty 200, which would tell WeChat to stop delivering.
        return JSONResponse({"error": "InProgress", "reason": "the answer is still being prepared"},
                            status_code=503), None

    async def evaluate(self, message: InboundMessage) -> tuple[Reply, dict[str, Any]]:
        """One message answered as its first delivery would answer it, without delivering or
        logging it: the reply, and how it was made (``wxassist eval``)."""
        return await self._answer(message, self._max_new_tokens, self._clock.now_s() + self._first_window_s)

    async def _answer_job(self, message: InboundMessage, max_new_tokens: int, deadline_s: float | None = None) -> Reply:
        """One message's job, run once however many deliveries it gets."""
        started_s = time.monotonic()
        with self._telemetry.answer_span(message):
            reply, details = await self._answer(message, max_new_tokens, deadline_s)
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

    async def _answer(
        self, message: InboundMessage, max_new_tokens: int, deadline_s: float | None = None
    ) -> tuple[Reply, dict[str, Any]]:
        """The reply, and what the log line should say about how it was made."""
        details: dict[str, Any] = {"route": "error"}
        if message.content and len(message.content) > self._max_question_chars:  # before anything reads it
            message = dataclasses.replace(message, content=message.content[: self._max_question_chars])
        try:
            refused = await self._admission.refusal(message)
            if refused is not None:
                details["route"] = "limited"
                return await self._encrypt.text_reply.remote(message, refused), details
            if await self._outbox_gate.full(message):
                details["route"] = "outbox_full"
                return await self._encrypt.text_reply.remote(message, self._outbox_full_text), details
            if message.account in self._passive_only and is_continue_request(message, self._continue_keyword):
                details["route"] = "continue"
                return await self._conversation.next_part(message), details
            intent = await self._intent.classify.remote(message)
            details["route"] = intent.route.value
            if intent.forget_user:
                await self._conversation.forget(message, intent)
            if intent.route is Route.IGNORE:
                return NO_REPLY, details
            if intent.route is Route.HANDOFF and self._handoff_transfer:
                return await self._encrypt.handoff_reply.remote(message, self._handoff_text), details
            if intent.reply is not None:
                if intent.route is Route.TOOL:
                    details["answer_source"] = "tool"
                return await self._encrypt.text_reply.remote(message, intent.reply), details
            return await self._answer_question(message, intent, max_new_tokens, details, deadline_s), details
        except Exception as exc:  # the user gets an apology, WeChat gets a 200, the log the cause
            log_failure("answer", exc)
            details["error"] = type(exc).__name__
            try:
                return await self._encrypt.text_reply.remote(message, self._failure_text), details
            except Exception as second:
                log_failure("failure reply", second)
                return NO_REPLY, details

    async def _answer_question(
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
                return await self._encrypt.text_reply.remote(message, self._no_answer_text)
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
            return await self._encrypt.text_reply.remote(message, self._no_answer_text)
        await self._conversation.remember(message, question, answer.text)
        if cache and answer.grounding == "generated":  # a quote costs nothing to make again
            self._in_background(self._retrieve.remember_answer.remote(
                message.account, question, answer.text, answer.sources, passages
            ))
        if answer.grounding == "extractive":  # marked as a quote, naming where it comes from
            intro = self._quote_intro.format(titles="》《".join(answer.sources)) if answer.sources else ""
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
            return await self._encrypt.text_reply.remote(message, self._outbox_full_text)
        self._deferred_waiting += 1  # counted at the promise: a burst's deferrals all see it
        job_id = "deferred-" + dedupe_digest(message.dedupe_key)
        held = message.account in self._passive_only
        if held:  # a "继续" meanwhile waits for it instead of finding nothing
            await self._conversation.expect_part(message, job_id)
        audit_event("deferred", account=message.account, user=hashed_user(message.from_user), msg_id=message.msg_id)
        self._in_background(self._answer_later(message, job_id, question, passages, history, cache, quote))
        return await self._encrypt.text_reply.remote(message, self._busy_text["held" if held else "push"])

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
                    reply = await self._encrypt.text_reply.remote(message, self._failure_text)
                    break
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, 8.0)
            except Exception as exc:  # the user was promised an answer: an apology beats silence
                log_failure("deferred answer", exc)
                reply = await self._encrypt.text_reply.remote(message, self._failure_text)
                break
        await self._overflow(message.account).hold(message, job_id, reply.parts, 0)

    def _in_background(self, call) -> None:
        """Work the user's reply need not wait for; failures are logged, never raised."""

        async def run() -> None:
            try:
                await call
            except Exception as exc:
                log_failure("background call", exc)

        self._keep(asyncio.create_task(run(), context=detached_context()))  # in the message's trace, if any

    def _keep(self, task: asyncio.Task) -> None:
        """The event loop holds tasks weakly: keep a reference until each is done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

def _answer_source(answer: Answer) -> str:
    """How the model's answer reached the user: its own text, or the quote that replaced it."""
    return {"generated": "model", "none": "model", "extractive": "extract"}.get(answer.grounding, "not_found")
