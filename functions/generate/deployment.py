"""Thin Serve wrapper over ``Generator``; the engine class is injected (``engine_cls``)."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from functions.common.records import Answer, Passage, Turn
from functions.common.settings import Settings, load_settings
from functions.generate.core import Generator
from functions.generate.pace import DecodePace

log = logging.getLogger(__name__)


def model_folder(settings: Settings) -> Path:
    """The weights this replica loads: the configured store version, restored into the node's
    verified cache (a mismatch raises, so the replica refuses to start), or the demo model."""
    if not settings.model:
        return settings.model_dir()
    from functions.common.model_store import open_model_store, restore_model

    restored = restore_model(lambda: open_model_store(settings), settings.model, settings.model_cache_dir(),
                             rehash=settings.model_cache_rehash)
    log.info("model %s@%s from %s", restored.manifest.name, restored.manifest.version,
             "the store" if restored.downloaded else "the cache")
    return restored.path


def default_engine(settings: Settings) -> tuple[type, dict[str, Any]]:
    """``continuous`` (default): transformers' continuous batching; ``single``: one
    ``model.generate`` per request, one at a time (the baseline the batching is measured against);
    ``vllm``: vLLM's engine, on a GPU machine that has it installed."""
    if settings.generate_engine == "vllm":
        from functions.generate.vllm_engine import VllmEngine

        return VllmEngine, {"model_dir": model_folder(settings), "dtype": settings.engine_dtype,
                            "max_requests": settings.generate_batch}
    common = {"model_dir": model_folder(settings), "torch_threads": settings.torch_threads, "dtype": settings.engine_dtype}
    if settings.generate_engine == "single":
        from functions.generate.transformers_engine import TransformersEngine

        return TransformersEngine, common
    from functions.generate.batching_engine import ContinuousBatchingEngine

    return ContinuousBatchingEngine, {**common, "max_requests": settings.generate_batch,
                                      "max_new_tokens": settings.max_new_tokens}


class GenerateServer:
    def __init__(
        self,
        engine_cls: type | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        settings_overrides: dict[str, Any] | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
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
            pace=DecodePace(settings.generate_tokens_per_s),
        )

        self._answers = 0

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    async def answer(
        self,
        question: str,
        passages: list[Passage],
        max_new_tokens: int | None = None,
        history: tuple[Turn, ...] = (),
        deadline_s: float | None = None,
    ) -> Answer:
        self._answers += 1
        call = functools.partial(self._core.answer, question, passages, max_new_tokens, history, deadline_s)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def describe(self) -> dict[str, str]:
        """Which model, on what device and in which dtype this replica generates with."""
        engine = self._core.engine
        return {"model": engine.model_name, "device": str(getattr(engine, "device", "cpu")),
                "dtype": str(getattr(engine, "dtype", "")).removeprefix("torch.")}

    def close(self) -> None:
        """Stop the engine's background work (continuous batching's loop) and the pool."""
        close = getattr(self._core.engine, "close", None)
        if close is not None:
            close()
        self._pool.shutdown(wait=False)

    def stats(self) -> dict[str, int]:
        """Answers this replica generated: what the fast paths are measured against."""
        return {"answers": self._answers}
