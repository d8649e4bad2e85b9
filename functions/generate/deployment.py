"""Thin Serve wrapper over ``Generator``; the engine class is injected (``engine_cls``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from functions.common.records import Answer, Passage, Turn
from functions.common.settings import Settings, load_settings
from functions.generate.core import Generator

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


class GenerateServer:
    def __init__(
        self,
        engine_cls: type | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        settings_overrides: dict[str, Any] | None = None,
    ):
        settings = load_settings(**(settings_overrides or {}))
        if engine_cls is None:
            from functions.generate.transformers_engine import TransformersEngine

            engine_cls = TransformersEngine
            engine_kwargs = {"model_dir": model_folder(settings), "torch_threads": settings.torch_threads,
                             **(engine_kwargs or {})}
        engine = engine_cls(**(engine_kwargs or {}))
        self._core = Generator(
            engine,
            system_prompt=settings.system_prompt,
            max_new_tokens=settings.max_new_tokens,
            max_passage_chars=settings.max_passage_chars,
            min_support=settings.min_support,
            history_tokens=settings.memory_token_budget,
        )

        self._answers = 0

    def ready(self) -> bool:
        """A no-op the ingress calls at start, so handles are routed before the first user."""
        return True

    def answer(
        self, question: str, passages: list[Passage], max_new_tokens: int | None = None, history: tuple[Turn, ...] = ()
    ) -> Answer:
        self._answers += 1
        return self._core.answer(question, passages, max_new_tokens, history)

    def stats(self) -> dict[str, int]:
        """Answers this replica generated: what the fast paths are measured against."""
        return {"answers": self._answers}
