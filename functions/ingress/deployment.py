"""The ingress deployment: the HTTP edge of the service. It reads WeChat's callback under a
cap, claims the message once and lets the delivery coordinator wait for its answer; the
answer's job runs the conversation's stages (``routing.py``). Every failure becomes a 4xx or an
empty reply, never a 500. ``serve_app.compose_app`` builds it; its collaborators come from the
builder's assembly (``assembly.py``)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from functions.common.clock import Clock, SystemClock
from functions.common.records import InboundMessage, Outcome, Rejection, Reply
from functions.encrypt.core import NO_REPLY
from functions.ingress.assembly import Handles, IngressAssembler, assemble_ingress
from functions.ingress.http import http_app, log_failure, read_capped_body, rejected, unavailable
from observability.logs import hashed_user, log_event
from observability.tracing import ReportsSpans


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
        assemble: IngressAssembler = assemble_ingress,
    ):
        self.stages = stages = assemble(Handles(decrypt, intent, retrieve, generate, encrypt, push),
                                        dict(settings_overrides or {}), clock or SystemClock())
        self._clock = stages.clock
        self._handles = stages.handles
        self._telemetry = stages.telemetry
        self._delivery = stages.delivery
        self._tasks = stages.background.tasks  # intakes and background calls, kept until done
        self._keep = stages.background.keep
        self._recovery: asyncio.Task | None = None  # the journal watch (recover_orphans), once started
        self._recovery_every_s = stages.settings.job_lease_s / 3
        self._max_body_bytes = stages.settings.max_body_bytes
        self._first_window_s = stages.settings.delivery_window_s
        self._max_new_tokens = stages.settings.max_new_tokens

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
        handles = self._handles
        await asyncio.gather(*(handle.ready.remote() for handle in (
            handles.decrypt, handles.intent, handles.retrieve, handles.generate, handles.encrypt, handles.push)))

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def metrics(self) -> Response:
        """Prometheus text: this replica's metrics and every other process's latest snapshot."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(await asyncio.to_thread(self._telemetry.exposition), media_type=CONTENT_TYPE_LATEST)

    async def verify_url(self, account: str, request: Request) -> Response:
        try:
            result = await self._handles.decrypt.verify_url.remote(account, dict(request.query_params))
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
            opened = await self._handles.decrypt.open_callback.remote(account, query, body)
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
        return await self.stages.router.route(message, self._max_new_tokens,
                                              self._clock.now_s() + self._first_window_s)
