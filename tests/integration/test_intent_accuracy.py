"""The intent classifier with the service's embedder on the bundled examples: held-out accuracy.

Measured by bench/intent_accuracy.py (its printout in docs/conversations.md); the floors here
leave room for the fewer seeds used."""

from __future__ import annotations

from functions.kb.embedding import build_embedder
from functions.common.settings import load_settings
from functions.intent.by_examples import HybridEmbedding, LinearIntent, evaluate_held_out, read_examples


def test_held_out_accuracy_of_the_bundled_examples():
    settings = load_settings()
    embedder = build_embedder(settings)
    embedding = HybridEmbedding(embedder.embed_queries, settings.intent_dense_weight)
    result = evaluate_held_out(read_examples(), lambda kept: LinearIntent(kept, embedding), seeds=2,
                               threshold=settings.intent_threshold)
    assert result["accuracy"] >= 0.85, result
