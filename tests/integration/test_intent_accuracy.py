"""The intent classifier with the real MiniLM on the bundled examples: held-out accuracy.

Measured (bench/intent_accuracy.py, 5 seeds): route accuracy 0.80 overall and 0.95 on the
confident share the service acts on. The floors leave room for the seeds used here."""

from __future__ import annotations

from functions.common.knowledge_base import SentenceEmbedder
from functions.common.settings import load_settings
from functions.intent.knn import HybridEmbedding, evaluate_held_out, read_examples


def test_held_out_accuracy_of_the_bundled_examples():
    settings = load_settings()
    embedding = HybridEmbedding(SentenceEmbedder(settings.embedding_dir()).embed, settings.intent_dense_weight)
    result = evaluate_held_out(read_examples(), embedding, seeds=2, threshold=settings.intent_threshold)
    assert result["route_accuracy"] >= 0.72, result
    assert result["confident_route_accuracy"] >= 0.88 and result["confident_share"] >= 0.3, result
