"""wxassist's Serve application, its ingress, and the ``wxassist`` command.

``build_app(args)`` is the import path for ``serve run deploy/local.yaml``, ``serve deploy``
and KubeRay's ``serveConfigV2``. Replicas, autoscaling and resources live in ``deploy/*.yaml``,
not in decorators: the builder applies ``serve.deployment(cls, **options)`` to plain classes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import inspect
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from functions.common.clock import Clock, SystemClock
from functions.common.errors import WxAssistError
from functions.common.continuation import ContinuationStore, continued_text, is_continue_request
from functions.common.delivery import DeliveryCoordinator, DeliveryPolicy, HeldOverflow, Outcome, Overflow, PushOverflow
from functions.common.ledger import ClaimLedger, dedupe_digest
from functions.common.job_journal import JobJournal
from functions.common.limits import LimitPolicy, RateLimiter
from functions.common.memory import ConversationMemory
from functions.common.outbox import Outbox
from functions.common.records import Answer, InboundMessage, Intent, Rejection, Reply, Route, Turn
from functions.common.settings import load_settings
from functions.common.state import open_state_store
from functions.encrypt.core import NO_REPLY
from functions.cli.eval_command import register_eval_command
from functions.ingress.answer_mode import AnswerModes
from functions.common.model_store.cli import positive_int, register_model_commands
from functions.common.pipeline_bench import register_pipeline_bench
from functions.common.serve_config import APP_NAME, read_serve_config_file
from functions.generate.scaling.cli import register_drain_command, register_simulate_command
from functions.generate.throughput import register_generate_bench
from knowledge.cli import ensure_sample_knowledge, open_kb, register_kb_commands
from observability import metrics
from observability.logs import audit_event, configure_logging, hashed_user, log_event, logger
from observability.message_telemetry import MessageTelemetry
from observability.trace_cli import register_trace_command
from observability.tracing import (ReportsSpans, TracedHandle, configure_for, current_traceparent, detached_context,
                                   untraced)

REPO_DIR = Path(__file__).resolve().parent
DEFAULT_SERVE_CONFIG = REPO_DIR / "deploy" / "local.yaml"
DEFAULT_EMULATOR_URL = "http://127.0.0.1:8001"
# A "继续" waits on an answer still being generated; a pending mark older than this is
# presumed lost with its replica.
PENDING_STALE_S = 120.0
# A replica lost mid-answer is retried once: a question that itself kills replicas (an OOM)
# must not take down a third.
GENERATE_ATTEMPTS = 2

# ---- the ingress -----------------------------------------------------------------------


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
        self._continuations = ContinuationStore(
            store, clock, ttl_s=settings.continuation_ttl_s, pending_stale_s=PENDING_STALE_S
        )
        self._limiter = RateLimiter(store, clock, LimitPolicy(
            settings.user_burst, settings.user_per_min, settings.account_burst, settings.account_per_s
        ))
        self._limited_text = {"user": settings.limited_user_text, "account": settings.limited_account_text}
        self._memory = ConversationMemory(
            store, clock, ttl_s=settings.memory_ttl_s, max_turns=settings.memory_max_turns
        )
        self._answer_modes = AnswerModes({name: account.answer_mode for name, account in settings.account_map().items()},
                                         lambda: untraced(self._generate).describe.remote(), clock)
        self._quote_intro = settings.quote_intro
        self._faq_accounts = {name for name, account in settings.account_map().items() if account.faq_fast_path}
        self._cache_accounts = {name for name, account in settings.account_map().items()
                                if account.answer_cache and settings.answer_cache}
        self._passive_only = {name for name, account in settings.account_map().items() if account.strategy == "passive-only"}
        self._outbox = Outbox(store, clock)
        self._outbox_max_pending = settings.outbox_max_pending
        self._outbox_full_text = settings.outbox_full_text
        self._backlog_seen = (0, -1.0)  # (backlog, time.monotonic() it was read): read at most once a second
        pushed = PushOverflow(self._outbox, clock, trace_carrier=current_traceparent)
        held = HeldOverflow(self._continuations, self._pending_reply)

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
        self._decrypt = _carrying_trace(decrypt)
        self._intent = _carrying_trace(intent)
        self._retrieve = _carrying_trace(retrieve)
        self._generate = _carrying_trace(generate)
        self._encrypt = _carrying_trace(encrypt)
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
        self._continue_hint = settings.continue_hint_text
        self._continue_pending_text = settings.continue_pending_text
        self._continue_empty_text = settings.continue_empty_text
        self._continue_wait_s = settings.continue_wait_s

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
            return _unavailable("verify_url", exc)
        if isinstance(result, Rejection):
            return _rejected(account, result)
        return PlainTextResponse(result)

    async def callback(self, account: str, request: Request) -> Response:
        started_s = time.monotonic()
        arrived_s = self._clock.now_s()  # WeChat's window for this delivery runs from here
        self.watch_for_orphans()
        body = await _read_capped_body(request, self._max_body_bytes)
        if body is None:
            return _rejected(account, Rejection(413, "BodyTooLarge", f"body exceeds {self._max_body_bytes} bytes"))
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
            _log_failure("retract", exc)

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
            return _unavailable("open_callback", exc), None
        if isinstance(opened, Rejection):
            self._telemetry.rejected(opened.error)
            return _rejected(account, opened), None
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
            refused = await self._over_limit(message)
            if refused is not None:
                details["route"] = "limited"
                return await self._encrypt.text_reply.remote(message, refused), details
            if await self._outbox_full(message):
                details["route"] = "outbox_full"
                return await self._encrypt.text_reply.remote(message, self._outbox_full_text), details
            if message.account in self._passive_only and is_continue_request(message, self._continue_keyword):
                details["route"] = "continue"
                return await self._continue(message), details
            intent = await self._intent.classify.remote(message)
            details["route"] = intent.route.value
            if intent.forget_user:
                await self._forget(message, intent)
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
            _log_failure("answer", exc)
            details["error"] = type(exc).__name__
            try:
                return await self._encrypt.text_reply.remote(message, self._failure_text), details
            except Exception as second:
                _log_failure("failure reply", second)
                return NO_REPLY, details

    async def _answer_question(
        self, message: InboundMessage, intent: Intent, max_new_tokens: int, details: dict[str, Any],
        deadline_s: float | None = None,
    ) -> Reply:
        """A knowledge question or small talk: from the FAQ, the answer cache or the model."""
        question = intent.query or ""
        history = await self._recall(message)
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
                await self._remember(message, question, found.answer)
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
        await self._remember(message, question, answer.text)
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
            await asyncio.to_thread(self._continuations.expect, message, job_id)
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
                _log_failure("deferred answer", exc)
                reply = await self._encrypt.text_reply.remote(message, self._failure_text)
                break
        await self._overflow(message.account).hold(message, job_id, reply.parts, 0)

    def _in_background(self, call) -> None:
        """Work the user's reply need not wait for; failures are logged, never raised."""

        async def run() -> None:
            try:
                await call
            except Exception as exc:
                _log_failure("background call", exc)

        self._keep(asyncio.create_task(run(), context=detached_context()))  # in the message's trace, if any

    def _keep(self, task: asyncio.Task) -> None:
        """The event loop holds tasks weakly: keep a reference until each is done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _outbox_full(self, message: InboundMessage) -> bool:
        """Past ``outbox_max_pending`` answers waiting to be pushed, a push account's new
        question gets a "too busy, ask again" reply and no job. Answers already promised are
        never refused the outbox; a store outage refuses nothing."""
        if message.account in self._passive_only or message.msg_type == "event":
            return False
        backlog, read_at = self._backlog_seen
        if time.monotonic() - read_at > 1.0 or read_at < 0:
            try:
                backlog = await asyncio.to_thread(self._outbox.backlog)
            except Exception as exc:  # a store outage refuses nothing, and is not asked again at once
                _log_failure("outbox backlog", exc)
                backlog = 0
            self._backlog_seen = (backlog, time.monotonic())
        if backlog < self._outbox_max_pending:
            return False
        metrics.OUTBOX_REFUSALS.inc()
        audit_event("outbox_full", account=message.account, backlog=backlog, msg_id=message.msg_id)
        return True

    async def _over_limit(self, message: InboundMessage) -> str | None:
        """The friendly refusal for a user or account over its rate limit; None to go on.
        Events are not limited (WeChat sends them, not the user's typing)."""
        if message.msg_type == "event":
            return None
        try:
            admission = await asyncio.to_thread(self._limiter.admit, message)
        except Exception as exc:  # limits protect the GPU; a store outage must not silence users
            _log_failure("rate limit", exc)
            return None
        if admission.allowed:
            return None
        audit_event("limited", scope=admission.scope, retry_after_s=round(admission.retry_after_s, 1),
                    account=message.account, user=hashed_user(message.from_user), msg_id=message.msg_id)
        return self._limited_text[admission.scope]

    async def _recall(self, message: InboundMessage) -> tuple[Turn, ...]:
        try:
            return await asyncio.to_thread(self._memory.recall, message)
        except Exception as exc:  # an answer without context beats no answer
            _log_failure("recall", exc)
            return ()

    async def _remember(self, message: InboundMessage, question: str, answer: str) -> None:
        try:
            await asyncio.to_thread(self._memory.remember, message, question, answer)
        except Exception as exc:
            _log_failure("remember", exc)

    async def _forget(self, message: InboundMessage, intent: Intent) -> None:
        """/reset clears the conversation; unsubscribing also drops answers held for 继续."""
        await asyncio.to_thread(self._memory.forget, message)
        if intent.route is Route.IGNORE:
            await asyncio.to_thread(self._continuations.forget, message)
        log_event("forgotten", account=message.account, user=hashed_user(message.from_user), reason=intent.reason)

    async def _continue(self, message: InboundMessage) -> Reply:
        """"继续" on a passive-only account: the next held part, waiting a while for an answer
        still being prepared (within this message's own delivery windows)."""
        give_up_at = time.monotonic() + self._continue_wait_s
        part = await asyncio.to_thread(self._continuations.take, message)
        while part.kind == "pending" and time.monotonic() < give_up_at:
            await asyncio.sleep(0.25)
            part = await asyncio.to_thread(self._continuations.take, message)
        if part.kind == "part":
            return await self._encrypt.part_reply.remote(message, continued_text(part, self._continue_hint))
        text = self._continue_pending_text if part.kind == "pending" else self._continue_empty_text
        return await self._encrypt.text_reply.remote(message, text)

    async def _pending_reply(self, message: InboundMessage) -> Reply:
        """What a passive-only account's last delivery says while the answer is still coming."""
        return await self._encrypt.text_reply.remote(message, self._continue_pending_text)


FOLLOW_UP = re.compile(r"^(那|那么|还有|另外|它|他|她|这个|那个|这|那些|这些|and\b|what about)|呢[？?]?$", re.IGNORECASE)


def _answer_source(answer: Answer) -> str:
    """How the model's answer reached the user: its own text, or the quote that replaced it."""
    return {"generated": "model", "none": "model", "extractive": "extract"}.get(answer.grounding, "not_found")


def retrieval_query(question: str, history: tuple[Turn, ...], short_chars: int = 12) -> str:
    """A short follow-up ("那运费呢？", "它多少钱") names too little to retrieve by: it is
    searched together with the question before it. Standalone questions are searched as asked."""
    bare = question.strip()
    if not history or len(bare) >= short_chars or not FOLLOW_UP.search(bare):
        return question
    return f"{history[-1].question} {question}"


class InProcessHandle:
    """A deployment class run in the calling process behind the handle interface:
    ``handle.method.remote(...)`` awaits the method in a thread, as a replica would run it,
    or, with ``inline``, calls it on the event loop (for sub-millisecond CPU work, where the
    hop to a thread and back costs more than the call). Fused mode, benchmarks and tests."""

    def __init__(self, target: Any, *, inline: bool = False):
        self._target = target
        self._inline = inline

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)
        inline = self._inline

        class _Call:
            @staticmethod
            def remote(*args: Any, **kwargs: Any):
                if inspect.iscoroutinefunction(method):
                    return method(*args, **kwargs)
                if inline:
                    return _completed(method, *args, **kwargs)
                return asyncio.to_thread(method, *args, **kwargs)

        return _Call()


async def _completed(method, *args: Any, **kwargs: Any) -> Any:
    return method(*args, **kwargs)


def fused_steps(settings_overrides: dict[str, Any] | None) -> tuple[InProcessHandle, InProcessHandle, InProcessHandle]:
    """Decrypt, intent and encrypt inside the calling process (fused mode, and the bench's
    in-process floor). Decrypting and encrypting one message take well under a millisecond,
    so a thread hop would cost more than the work; intent may embed the question (kNN): a thread."""
    from functions.decrypt.deployment import DecryptServer
    from functions.encrypt.deployment import EncryptServer
    from functions.intent.deployment import IntentServer

    return (InProcessHandle(DecryptServer(settings_overrides), inline=True),
            InProcessHandle(IntentServer(settings_overrides)),
            InProcessHandle(EncryptServer(settings_overrides), inline=True))


def _carrying_trace(handle: Any) -> Any:
    """A Serve handle's calls carry the message's trace to the replica. An in-process one
    needs nothing: its spans find the caller's in the context."""
    return handle if isinstance(handle, InProcessHandle) else TracedHandle(handle)


def http_app(ingress: Ingress) -> FastAPI:
    app = FastAPI(title="wxassist", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return await ingress.healthz()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return await ingress.metrics()

    @app.get("/wechat/{account}")
    async def verify_url(account: str, request: Request) -> Response:
        return await ingress.verify_url(account, request)

    @app.post("/wechat/{account}")
    async def callback(account: str, request: Request) -> Response:
        return await ingress.callback(account, request)

    return app


async def _read_capped_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None once it passes ``max_bytes``: never buffer an attacker's 10 MB."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _log_failure(step: str, exc: BaseException) -> None:
    """The error type at ERROR; the traceback, which may quote message text, only at DEBUG."""
    logger().error("%s failed: %s", step, type(exc).__name__)
    logger().debug("%s traceback", step, exc_info=exc)


def _unavailable(step: str, exc: BaseException) -> Response:
    _log_failure(step, exc)
    return JSONResponse({"error": "Unavailable", "reason": "temporarily unavailable"}, status_code=503)


def _rejected(account: str, rejection: Rejection) -> Response:
    log_event("rejected", account=account[:64], error=rejection.error, status=rejection.http_status)
    return JSONResponse({"error": rejection.error, "reason": rejection.reason}, status_code=rejection.http_status)


# ---- the application builder -----------------------------------------------------------


def compose_app(
    args: Mapping[str, Any] | None = None,
    deployment_options: Mapping[str, dict[str, Any]] | None = None,
    *,
    engine_cls: type | None = None,
    engine_kwargs: dict[str, Any] | None = None,
):
    """Compose the pipeline. ``args`` are non-secret settings overrides (validated here, in
    the driver, so a typo fails before any replica starts); ``deployment_options`` are
    Serve options per deployment name, as in a Serve config's ``deployments:`` list;
    ``engine_cls`` replaces the transformers engine (tests, other backends)."""
    from ray import serve

    from functions.decrypt.deployment import DecryptServer
    from functions.encrypt.deployment import EncryptServer
    from functions.generate.deployment import GenerateServer
    from functions.intent.deployment import IntentServer
    from functions.push.deployment import PushServer
    from functions.retrieve.deployment import RetrieveServer

    overrides = dict(args or {})
    settings = load_settings(**overrides)
    options = deployment_options or {}

    def deployment(name: str, cls: type):
        return serve.deployment(cls, name=name, **options.get(name, {}))

    if settings.pipeline_mode == "fused":  # decrypt, intent and encrypt inside the ingress: no hops
        decrypt = intent = encrypt = None
    else:
        decrypt = deployment("decrypt", DecryptServer).bind(overrides)
        intent = deployment("intent", IntentServer).bind(overrides)
        encrypt = deployment("encrypt", EncryptServer).bind(overrides)
    retrieve = deployment("retrieve", RetrieveServer).bind(overrides)
    generate = deployment("generate", GenerateServer).bind(engine_cls, engine_kwargs, overrides)
    push = deployment("push", PushServer).bind(overrides)
    ingress = deployment("ingress", serve.ingress()(Ingress))
    return ingress.bind(decrypt, intent, retrieve, generate, encrypt, push, overrides)


def build_app(args: dict[str, Any]):
    """Serve's application-builder entry point (``import_path: serve_app:build_app``)."""
    return compose_app(args)


def read_serve_config(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """(http_options, app args, options by deployment) from a Serve config file, validated
    with Serve's own schema so ``wxassist up`` and ``serve run`` accept the same files."""
    config = read_serve_config_file(path)
    options = config.deployment_options(APP_NAME)
    return config.schema.http_options.model_dump(exclude_unset=True), dict(config.application(APP_NAME).args or {}), options


# ---- the command line ------------------------------------------------------------------


THROUGHPUT_FLAGS = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
# Direct ingress drains an ingress replica for 30 s before it stops, so a load balancer can
# deregister it; one machine has none, and Ctrl-C took a minute. Clusters set their own.
# Ray starts its workers at nice 15, below anything else on the machine: beside one busy
# process at normal priority (a build, a backup) every replica got a few percent of a core and
# every WeChat delivery timed out (wxassist bench burst beside stress-ng: 200 of 200). The
# replicas are the service's request path, so they run at normal priority.
ONE_MACHINE_SERVE_ENV = {**THROUGHPUT_FLAGS, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
                         "RAY_worker_niceness": "0"}


def apply_one_machine_serve_env() -> None:
    """Before Ray starts (its processes read these once): what one machine runs best with,
    unless the environment already says otherwise."""
    for name, value in ONE_MACHINE_SERVE_ENV.items():
        os.environ.setdefault(name, value)


def _cmd_up(opts: argparse.Namespace) -> int:
    from functions.common.settings import ensure_dev_credentials

    settings = load_settings()
    home = settings.home_dir()
    os.environ["WXA_HOME"] = str(home)  # replicas inherit the driver's environment
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Serve's throughput-optimized mode and its haproxy proxy: `wxassist bench pipeline`
    # measured 1.6x the messages/s of Serve's defaults on 2 cores. Set either to 0 to opt out.
    apply_one_machine_serve_env()
    dev_credentials = None
    if settings.wechat_token is None and settings.environment == "development":
        dev_credentials, generated = ensure_dev_credentials(home)
        print(f"{'Generated' if generated else 'Using'} development credentials in {home}/dev-credentials.json")
    # A bad config file is refused before any model or knowledge base work.
    http_options, app_args, deployment_options = read_serve_config(Path(opts.config))
    ensure_model(settings)
    ensure_sample_knowledge(settings)

    host = opts.host or http_options.get("host", "127.0.0.1")
    port = opts.port or http_options.get("port", 8000)
    base_url = f"http://{host}:{port}"
    emulator = None
    if dev_credentials is not None and "WXA_WECHAT_API_BASE" not in os.environ:
        # Development: WeChat is the emulator, so pushed answers land somewhere you can see.
        emulator = _start_emulator(settings, base_url, opts.emulator_port or port + 1)
        os.environ["WXA_WECHAT_API_BASE"] = emulator.url
    import ray
    from ray import serve

    # Ctrl-C signals the terminal's whole process group. Ray's own processes (GCS, raylet,
    # workers) would die at once, and the shutdown below could then not reach them: Serve's
    # haproxy was left running, holding the port. They start ignoring SIGINT (an ignored
    # signal is inherited), so only this process hears Ctrl-C and stops them in order.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray.init(include_dashboard=False, logging_level="WARNING")
        serve.start(http_options={"host": host, "port": port})
    finally:
        signal.signal(signal.SIGINT, previous)
    app = compose_app({**app_args, "home": str(home)}, deployment_options)
    serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": opts.log_level})
    print(f"\nwxassist is up. Callback URL: {base_url}/wechat/default")
    if emulator is not None:
        print(f"WeChat emulator (callbacks and the customer-service API): {emulator.url}")
    if dev_credentials is not None:
        # Secrets stay in the owner-only file: terminal output ends up in scrollback and CI logs.
        print(f"Development account: appid {dev_credentials['appid']}; token and EncodingAESKey in "
              f"{home}/dev-credentials.json (owner-only)")
    else:
        account = settings.default_account()
        print(f"Account 'default': appid {account.appid if account else '?'} (token and key from WXA_WECHAT_*)")
    chat_hint = f" --emulator {emulator.url}" if emulator is not None and emulator.url != DEFAULT_EMULATOR_URL else ""
    print(f'Try it from another shell: wxassist chat "你们的退货政策是什么？"{chat_hint}\nCtrl-C stops.')
    # Supervisors (systemd, Kubernetes, `kill`) stop with SIGTERM, and a shell's background
    # job ignores SIGINT: both must shut Serve and Ray down, not orphan their processes.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping wxassist…")
    finally:
        serve.shutdown()
        ray.shutdown()
        if emulator is not None:
            emulator.__exit__(None, None, None)
    return 0


def _start_emulator(settings, callback_base: str, port: int):
    from functions.common.emulator import WeChatEmulator, emulator_app
    from functions.common.platform_api import BackgroundServer

    emulator = WeChatEmulator(settings.account_map(), callback_base)
    return BackgroundServer(emulator_app(emulator), port).__enter__()


def _cmd_emulate(opts: argparse.Namespace) -> int:
    import uvicorn

    from functions.common.emulator import WeChatEmulator, emulator_app

    settings = load_settings()
    if not settings.account_map():
        raise WxAssistError("no account configured: start `wxassist up` once, or set WXA_WECHAT_*")
    app = emulator_app(WeChatEmulator(settings.account_map(), opts.target))
    print(f"WeChat emulator on http://127.0.0.1:{opts.port}, delivering to {opts.target}; point "
          f"WXA_WECHAT_API_BASE at it so the service pushes here.")
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="warning")
    return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def ensure_model(settings) -> None:
    if settings.model:
        return  # a store version is restored by the replicas themselves
    from functions.generate.gguf_import import ensure_demo_model

    if not (settings.model_dir() / "model.safetensors").is_file():
        print(f"Converting the bundled demo model into {settings.model_dir()} (once, ~30 s)…")
    ensure_demo_model(settings.model_dir())


def _cmd_chat(opts: argparse.Namespace) -> int:
    """Be a WeChat user: the emulator delivers the message as the platform would and
    collects what the user receives, passively or pushed."""
    import httpx

    request = {"user": opts.user, "text": opts.text, "account": opts.account, "safe_mode": not opts.plain}
    try:
        response = httpx.post(f"{opts.emulator.rstrip('/')}/_emulator/messages", json=request, timeout=120)
    except httpx.HTTPError as exc:
        raise WxAssistError(
            f"cannot reach the WeChat emulator at {opts.emulator} ({type(exc).__name__}): `wxassist up` starts it "
            "in development, `wxassist emulate` on its own"
        ) from exc
    result = response.json()
    if "error" in result:
        raise WxAssistError(result["error"])
    if opts.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    if result["outcome"] == "failed":
        raise WxAssistError(f"no delivery was answered ({', '.join(result['statuses'])}): is the service running?")
    for message in result["received"]:
        prefix = "" if message["channel"] == "passive" else "[客服消息] "
        print(prefix + message["text"])
    if not result["received"]:
        print("(no reply)")
    print(f"(MsgId {result['msg_id']}: `wxassist trace {result['msg_id']}` shows where its time went)", file=sys.stderr)
    return 0


# The burst's shape, shared by `wxassist bench burst` and the burst test (tests/serve/
# test_deadlines.py), so the test holds what the bench measures: 200 messages from 50 users in
# 10 s into two ingress replicas, a stand-in generator at 0.5 s an answer, 4 at a time (its
# queue outgrows the passive window, so later answers are deferred or pushed).
BURST_INGRESS_REPLICAS = 2
BURST_GENERATE_CONCURRENCY = 4
BURST_ANSWER_S = 0.5
# The FAQ fast path and the answer cache would answer the burst's one question without
# generating: off, so the burst measures deliveries against a generator's pace.
BURST_SETTINGS = {"push_poll_s": 0.2, "wechat_faq_fast_path": False, "wechat_answer_cache": False,
                  "answerability": "off", "wechat_answer_mode": "generate"}


def nothing_left_to_send(settings):
    """True once the service's store holds no open job and no answer waiting to be pushed:
    from then on, nothing more can reach a user."""
    store = open_state_store(settings.state_location(), SystemClock())
    journal, outbox = JobJournal(store, SystemClock(), recheck_s=settings.job_lease_s), Outbox(store, SystemClock())
    return lambda: journal.size() == 0 and outbox.backlog() == 0


def _cmd_bench_burst(opts: argparse.Namespace) -> int:
    """WeChat's worst hour in one command: a burst through the emulator into the real
    pipeline on a private Ray instance, with a paced stand-in for the GPU. Exit status 1
    when any message was lost or answered twice."""
    import shutil
    import tempfile

    import ray
    from ray import serve

    from functions.common.emulator import WeChatEmulator, emulator_app, run_burst
    from functions.common.platform_api import BackgroundServer, free_port
    from functions.common.settings import ensure_dev_credentials
    from functions.generate.paced_engine import PacedEngine

    home = Path(tempfile.mkdtemp(prefix="wxassist-burst-"))
    overrides = {"home": str(home), "state_uri": opts.state_uri, **BURST_SETTINGS}
    settings = load_settings(**overrides)
    ensure_dev_credentials(home)
    _, app_args, options = read_serve_config(Path(opts.config))
    # The paced engine needs no CPU: logical CPUs only, so any machine can run the burst.
    options = {name: {**o, "ray_actor_options": {"num_cpus": 0}} for name, o in options.items()}
    options["ingress"]["num_replicas"] = opts.ingress_replicas
    options["generate"]["max_ongoing_requests"] = opts.generate_concurrency
    port = free_port()
    emulator = WeChatEmulator(settings.account_map(), f"http://127.0.0.1:{port}")
    note = print if not opts.json else lambda *a: print(*a, file=sys.stderr)
    note(f"burst: {opts.messages} messages from {opts.users} users in {opts.seconds:g} s; "
         f"{opts.ingress_replicas} ingress replicas; answers take {opts.answer_s:g} s, "
         f"{opts.generate_concurrency} at a time; state {settings.state_location().split(':')[0]}")
    try:
        with open_kb(settings) as kb:  # the FAQ is enough to ground the fixed answer
            from knowledge import SAMPLE_CORPUS_DIR
            from knowledge.ingest import ingest

            ingest(kb, [SAMPLE_CORPUS_DIR / "faq.jsonl"])
        apply_one_machine_serve_env()  # what `wxassist up` runs with
        ray.init(include_dashboard=False, logging_level="ERROR", num_cpus=2, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        with BackgroundServer(emulator_app(emulator), free_port()) as platform:
            app = compose_app({**app_args, **overrides, "wechat_api_base": platform.url}, options,
                              engine_cls=PacedEngine, engine_kwargs={"seconds_per_answer": opts.answer_s})
            serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": "WARNING"})
            report = asyncio.run(run_burst(emulator, messages=opts.messages, users=opts.users,
                                           seconds=opts.seconds, settle_s=opts.settle_s,
                                           settled=nothing_left_to_send(settings)))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    if opts.json:
        print(json.dumps(report))
    else:
        print(f"sent {report['sent']}  delivered {report['delivered']}  duplicates {report['duplicates']}  "
              f"lost {report['lost']}\npassive share {report['passive_share']:.2f}  "
              f"p50 {report['p50_s']:.1f} s  p99 {report['p99_s']:.1f} s")
    exactly_once = report["delivered"] == report["sent"] and not report["duplicates"] and not report["lost"]
    return 0 if exactly_once else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxassist", description="Self-hosted AI assistant for WeChat on Ray Serve.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start Ray and Serve locally and serve the callback URL")
    up.add_argument("--port", type=int, help="HTTP port (default: the Serve config's, 8000)")
    up.add_argument("--host", help="HTTP host (default: the Serve config's, 127.0.0.1)")
    up.add_argument("--config", default=str(DEFAULT_SERVE_CONFIG), help="Serve config file (default: deploy/local.yaml)")
    up.add_argument("--log-level", default="WARNING", help="Serve and replica log level (default: WARNING)")
    up.add_argument("--emulator-port", type=int, help="the development WeChat emulator's port (default: port + 1)")

    emulate = commands.add_parser("emulate", help="run the WeChat emulator: callbacks out, customer-service API in")
    emulate.add_argument("--port", type=int, default=8001)
    emulate.add_argument("--target", default="http://127.0.0.1:8000", help="the service's base URL")
    emulate.set_defaults(handler=_cmd_emulate)
    up.set_defaults(handler=_cmd_up)

    chat = commands.add_parser(
        "chat", help="send one message as WeChat would (5 s per delivery, up to 3 deliveries) and print the reply"
    )
    chat.add_argument("text")
    chat.add_argument("--user", default="wxassist-chat-user", help="the FromUserName (openid) to send as")
    chat.add_argument("--account", default="default")
    chat.add_argument("--emulator", default=DEFAULT_EMULATOR_URL, help="the WeChat emulator (started by `wxassist up`)")
    chat.add_argument("--plain", action="store_true", help="deliver in plain mode (unencrypted)")
    chat.add_argument("--json", action="store_true")
    chat.set_defaults(handler=_cmd_chat)

    register_kb_commands(commands)
    register_eval_command(commands)

    register_model_commands(commands)
    register_trace_command(commands)
    register_simulate_command(commands)
    register_drain_command(commands)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    register_generate_bench(bench)
    register_pipeline_bench(bench)
    burst = bench.add_parser(
        "burst", help="a burst through the WeChat emulator: delivered, duplicates, lost, passive share, p50/p99"
    )
    burst.add_argument("--messages", type=positive_int, default=200)
    burst.add_argument("--users", type=positive_int, default=50)
    burst.add_argument("--seconds", type=float, default=10.0, help="spread the messages over this long")
    burst.add_argument("--answer-s", type=float, default=BURST_ANSWER_S,
                       help="seconds the stand-in generator takes per answer")
    burst.add_argument("--generate-concurrency", type=positive_int, default=BURST_GENERATE_CONCURRENCY,
                       help="answers generated at once")
    burst.add_argument("--ingress-replicas", type=positive_int, default=BURST_INGRESS_REPLICAS)
    burst.add_argument("--state-uri", help="state store (default: a fresh SQLite file); redis://… to scale out")
    burst.add_argument("--settle-s", type=float, default=90.0, help="how long to wait for pushed answers")
    burst.add_argument("--config", default=str(DEFAULT_SERVE_CONFIG), help="Serve config the deployments come from")
    burst.add_argument("--json", action="store_true", help="one JSON object: sent, delivered, duplicates, lost, …")
    burst.set_defaults(handler=_cmd_bench_burst)
    return parser


def main(argv: list[str] | None = None) -> int:
    from observability.logs import quiet_libraries

    opts = _parser().parse_args(argv)
    quiet_libraries()  # before any model loads; replicas inherit it through the environment
    configure_logging(os.environ.get("WXA_LOG_LEVEL", "WARNING"))
    try:
        return opts.handler(opts)
    except WxAssistError as exc:  # errors become user messages only here, at the edge
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
