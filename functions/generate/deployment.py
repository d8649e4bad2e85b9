"""Thin Serve wrapper over ``Generator``; the engine class is injected (``engine_cls``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from functions.common.records import Answer, Passage, Quote, Turn
from functions.common.settings import Settings, load_settings
from functions.generate.core import Generator, engine_languages
from functions.generate.pace import DecodePace
from observability import metrics
from observability.tracing import ReportsSpans, configure_for, set_attributes, traced

log = logging.getLogger(__name__)


def model_folder(settings: Settings) -> Path:
    """The weights this replica loads: the configured store version, restored into the node's
    verified cache (a mismatch raises, so the replica refuses to start), or the demo model."""
    if not settings.model:
        return settings.model_dir()
    from functions.model_store import open_model_store, restore_model

    restored = restore_model(lambda: open_model_store(settings), settings.model, settings.model_cache_dir(),
                             rehash=settings.model_cache_rehash)
    log.info("model %s@%s from %s", restored.manifest.name, restored.manifest.version,
             "the store" if restored.downloaded else "the cache")
    return restored.path


def default_engine(settings: Settings) -> tuple[type, dict[str, Any]]:
    """``auto`` (default): the faster batching on this machine (``engine_choice.py``);
    ``continuous``: transformers' continuous batching; ``static``: padded static batches;
    ``single``: one ``model.generate`` per request, one at a time (the baseline the batching is
    measured against); ``vllm``: vLLM's engine, on a GPU machine that has it installed."""
    if settings.generate_engine == "vllm":
        from functions.generate.vllm_engine import VllmEngine

        return VllmEngine, {"model_dir": model_folder(settings), "dtype": settings.engine_dtype,
                            "max_requests": settings.generate_batch}
    common = {"model_dir": model_folder(settings), "torch_threads": settings.torch_threads, "dtype": settings.engine_dtype}
    if settings.generate_engine == "single":
        from functions.generate.transformers_engine import TransformersEngine

        return TransformersEngine, common
    engine = settings.generate_engine
    if engine == "auto":
        from functions.generate.engine_choice import this_machine

        engine = this_machine().batching()
    if engine == "static":
        from functions.generate.static_batch_engine import StaticBatchEngine

        return StaticBatchEngine, {**common, "max_requests": settings.generate_batch}
    from functions.generate.batching_engine import ContinuousBatchingEngine

    return ContinuousBatchingEngine, {**common, "max_requests": settings.generate_batch,
                                      "max_new_tokens": settings.max_new_tokens}


class GenerateServer(ReportsSpans):
    def __init__(
        self,
        engine_cls: type | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        settings_overrides: dict[str, Any] | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
        configure_for("generate", settings)
        if engine_cls is None:
            engine_cls, defaults = default_engine(settings)
            engine_kwargs = {**defaults, **(engine_kwargs or {})}
        engine = engine_cls(**(engine_kwargs or {}))
        # Requests wait in these threads while the engine batches them: as many as it batches.
        self._pool = ThreadPoolExecutor(max_workers=settings.generate_batch, thread_name_prefix="wxassist-generate")
        self._core = Generator(
            engine,
            system_prompt=settings.system_prompt,
            max_new_tokens=settings.max_new_tokens,
            max_passage_chars=settings.max_passage_chars,
            min_support=settings.min_support,
            history_tokens=settings.memory_token_budget,
            # A model engine measures its pace in its warm-up, on this machine: the setting is
            # a guess about some CPU, and on a slower one the first answers would be budgeted
            # for a speed the replica does not have and miss WeChat's window.
            pace=DecodePace(getattr(engine, "tokens_per_s_at_start", None) or settings.generate_tokens_per_s),
        )

        self._languages = engine_languages(engine, settings.generate_languages)
        self._answers = 0
        # Guards each request's "started" flag: a request cancelled in the queue and the pool
        # thread picking it up must agree on which of them takes it out of the queue gauge.
        self._started_lock = threading.Lock()
        self._publisher = metrics.replica_publisher("generate", settings)

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    @traced("generate")
    async def answer(
        self,
        question: str,
        passages: list[Passage],
        max_new_tokens: int | None = None,
        history: tuple[Turn, ...] = (),
        deadline_s: float | None = None,
        quote: Quote | None = None,
    ) -> Answer:
        self._answers += 1
        arrived_s = time.monotonic()
        started = threading.Event()  # set in the pool thread: a request cancelled while queued never starts
        metrics.GENERATE_QUEUE.inc()  # in the pool's queue, not yet at the engine
        call = functools.partial(self._generate, started, arrived_s, question, passages, max_new_tokens, history,
                                 deadline_s, quote)
        try:
            answer, queue_wait_s = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            with self._started_lock:  # cancelled in the queue: it leaves the queue here, and never runs
                abandoned = not started.is_set()
                started.set()
            if abandoned:
                metrics.GENERATE_QUEUE.dec()
        metrics.GENERATE_TOKENS.labels("in").inc(answer.tokens_in)
        metrics.GENERATE_TOKENS.labels("out").inc(answer.tokens_out)
        metrics.GENERATE_SECONDS.observe(time.monotonic() - arrived_s)
        set_attributes(**{"gen_ai.usage.input_tokens": answer.tokens_in, "gen_ai.usage.output_tokens": answer.tokens_out,
                          "wxassist.truncated": answer.truncated, "wxassist.queue_wait_ms": round(queue_wait_s * 1000, 1),
                          "wxassist.grounding": answer.grounding, "wxassist.passages": len(passages),
                          "gen_ai.request.model": answer.model or self._core.engine.model_name})
        return answer

    def _generate(self, started: threading.Event, arrived_s: float, *args) -> tuple[Answer | None, float]:
        """In a pool thread: the wait for the thread is the replica's queue wait."""
        queue_wait_s = time.monotonic() - arrived_s
        with self._started_lock:
            if started.is_set():  # its caller was cancelled while it queued: no GPU time for it
                return None, queue_wait_s
            started.set()
        metrics.GENERATE_QUEUE.dec()
        metrics.GENERATE_BATCH.inc()  # at the engine: what it batches
        try:
            return self._core.answer(*args), queue_wait_s
        finally:
            metrics.GENERATE_BATCH.dec()

    def describe(self) -> dict[str, Any]:
        """Which model, on what device and in which dtype this replica generates with, the
        languages it writes and its measured pace: what the ingress's answer mode asks."""
        engine = self._core.engine
        return {"model": engine.model_name, "engine": type(engine).__name__, "device": str(getattr(engine, "device", "cpu")),
                "dtype": str(getattr(engine, "dtype", "")).removeprefix("torch."),
                "languages": list(self._languages), "tokens_per_s": round(self._core.pace.tokens_per_s, 3)}

    def close(self) -> None:
        """Stop the engine's background work (continuous batching's loop) and the pool."""
        close = getattr(self._core.engine, "close", None)
        if close is not None:
            close()
        self._pool.shutdown(wait=False)
        if self._publisher is not None:
            self._publisher.stop()

    def stats(self) -> dict[str, int]:
        """Answers this replica generated: what the fast paths are measured against."""
        return {"answers": self._answers}
