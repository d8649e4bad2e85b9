"""The ingress's builder: every collaborator of one ingress replica, made from the settings and
the functions' handles, handed to ``Ingress`` as one typed record.

Serve builds a replica from what the application's builder bound (``serve_app.compose_app``),
and state stores, tasks and locks cannot travel there; so the builder binds this function, and
each replica calls it once. Tests hand ``Ingress`` another one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from functions.common.clock import Clock
from functions.common.continuation import ContinuationStore
from functions.common.job_journal import JobJournal
from functions.common.ledger import ClaimLedger
from functions.common.limits import LimitPolicy, RateLimiter
from functions.common.memory import ConversationMemory
from functions.common.outbox import Outbox
from functions.common.settings import Settings, load_settings
from functions.common.state import open_state_store
from functions.ingress.answer_mode import AnswerModes
from functions.ingress.answering import AnswerTexts, KnowledgeAnswers
from functions.ingress.conversation import Admission, ContinueTexts, Conversation, OutboxGate
from functions.ingress.delivery import DeliveryCoordinator, DeliveryPolicy
from functions.ingress.handles import carrying_trace, fused_steps
from functions.ingress.http import log_failure
from functions.ingress.overflow import HeldOverflow, Overflow, PushOverflow
from functions.ingress.routing import MessageRouter, RoutingRules
from observability import metrics
from observability.message_telemetry import MessageTelemetry
from observability.tracing import configure_for, current_traceparent, detached_context, untraced

# A "继续" waits on an answer still being generated; a pending mark older than this is
# presumed lost with its replica.
PENDING_STALE_S = 120.0


@dataclass(frozen=True)
class Handles:
    """The functions the ingress calls (Serve handles, or in-process ones in tests and tools).
    decrypt, intent and encrypt are None in fused mode: they then run inside the ingress."""

    decrypt: Any
    intent: Any
    retrieve: Any
    generate: Any
    encrypt: Any
    push: Any  # never called per message: jobs reach it through the outbox


class BackgroundTasks:
    """Tasks of the replica that no request waits for. The event loop holds tasks weakly: each
    is kept here until done."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def keep(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def run(self, call: Awaitable[Any]) -> None:
        """Work the user's reply need not wait for; failures are logged, never raised."""

        async def run() -> None:
            try:
                await call
            except Exception as exc:
                log_failure("background call", exc)

        self.keep(asyncio.create_task(run(), context=detached_context()))  # in the message's trace, if any


@dataclass(frozen=True)
class IngressStages:
    """What one ingress replica works with."""

    settings: Settings
    clock: Clock
    handles: Handles  # traced: each call carries the message's trace
    telemetry: MessageTelemetry
    delivery: DeliveryCoordinator
    router: MessageRouter
    background: BackgroundTasks
    metrics_publisher: Any  # kept for the replica's life: it publishes on its own


def assemble_ingress(handles: Handles, settings_overrides: dict[str, Any], clock: Clock) -> IngressStages:
    settings = load_settings(**settings_overrides)
    configure_for("ingress", settings)  # log lines with trace ids, and the tracer
    store = open_state_store(settings.state_location(), clock)
    telemetry = MessageTelemetry(store, clock)
    publisher = metrics.replica_publisher("ingress", settings, store)  # other ingress replicas serve its metrics too
    if handles.decrypt is None:  # fused: the cheap steps run here
        decrypt, intent, encrypt = fused_steps(settings_overrides)
        handles = Handles(decrypt, intent, handles.retrieve, handles.generate, encrypt, handles.push)
    traced = Handles(*(carrying_trace(handle) for handle in (handles.decrypt, handles.intent, handles.retrieve,
                                                              handles.generate, handles.encrypt)), handles.push)
    accounts = settings.account_map()
    passive_only = frozenset(name for name, account in accounts.items() if account.strategy == "passive-only")
    background = BackgroundTasks()
    continuations = ContinuationStore(store, clock, ttl_s=settings.continuation_ttl_s, pending_stale_s=PENDING_STALE_S)
    conversation = Conversation(
        ConversationMemory(store, clock, ttl_s=settings.memory_ttl_s, max_turns=settings.memory_max_turns),
        continuations, traced.encrypt, ContinueTexts(settings.continue_hint_text, settings.continue_pending_text,
                                                     settings.continue_empty_text, settings.continue_wait_s),
    )
    outbox = Outbox(store, clock)
    pushed = PushOverflow(outbox, clock, trace_carrier=current_traceparent)
    held = HeldOverflow(continuations, conversation.pending_reply)

    def overflow(account: str) -> Overflow:
        return held if account in passive_only else pushed

    # Asked outside any message's trace: describe() is not part of answering.
    answer_modes = AnswerModes({name: account.answer_mode for name, account in accounts.items()},
                               lambda: untraced(traced.generate).describe.remote(), clock)
    answers = KnowledgeAnswers(
        traced.retrieve, traced.generate, traced.encrypt, conversation, answer_modes, overflow, clock,
        AnswerTexts(settings.no_answer_text, settings.quote_intro, settings.failure_text, settings.outbox_full_text,
                    {"push": settings.busy_push_text, "held": settings.busy_held_text}),
        faq_accounts={name for name, account in accounts.items() if account.faq_fast_path},
        cache_accounts={name for name, account in accounts.items() if account.answer_cache and settings.answer_cache},
        passive_only=set(passive_only), max_deferred=settings.max_deferred_answers,
        deferred_ttl_s=settings.deferred_answer_ttl_s, in_background=background.run,
    )
    router = MessageRouter(
        RoutingRules(settings.max_question_chars, passive_only, settings.continue_keyword, settings.handoff_transfer,
                     settings.handoff_text, settings.outbox_full_text, settings.failure_text),
        Admission(RateLimiter(store, clock, LimitPolicy(settings.user_burst, settings.user_per_min,
                                                        settings.account_burst, settings.account_per_s)),
                  {"user": settings.limited_user_text, "account": settings.limited_account_text}),
        OutboxGate(outbox, set(passive_only), settings.outbox_max_pending),
        conversation, answers, traced.intent, traced.encrypt, telemetry,
    )
    delivery = DeliveryCoordinator(
        ClaimLedger(store, clock, ttl_s=settings.ledger_ttl_s, job_lease_s=settings.job_lease_s),
        overflow,
        DeliveryPolicy(window_s=settings.delivery_window_s, tokens_per_s=settings.generate_tokens_per_s),
        clock,
        router.answer_job,
        max_new_tokens=settings.max_new_tokens,
        lease_renew_s=settings.job_lease_s / 3,
        journal=JobJournal(store, clock, recheck_s=settings.job_lease_s),
        job_context=detached_context,  # a job outlives its delivery, but stays in the message's trace
        trace_carrier=current_traceparent,  # kept with the claim: retries link to the first
    )
    return IngressStages(settings, clock, traced, telemetry, delivery, router, background, publisher)


IngressAssembler = Callable[[Handles, dict[str, Any], Clock], IngressStages]
