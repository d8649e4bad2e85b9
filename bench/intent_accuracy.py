"""Intent classifier accuracy on a held-out split, side by side: dense (all-MiniLM-L6-v2)
alone, lexical (hashed character n-grams) alone, and the mix the service uses.

The labelled examples in ``knowledge/intents/examples.jsonl`` are split per label (seeded),
80% kept as the classifier's examples and 20% held out; that is repeated over several seeds
and averaged. Prints, per method: label accuracy over all held-out texts; route accuracy (FAQ
and knowledge questions take the same route, so confusing them costs nothing); the share the
classifier is confident about (vote share at or above the threshold, the only predictions
the service acts on) and the route accuracy on that share; then the ratio of the mix to each
method alone.

    .venv/bin/python bench/intent_accuracy.py [--json] [--seeds 5] [--threshold 0.6]
"""

from __future__ import annotations

import argparse
import json

from functions.common.knowledge_base import SentenceEmbedder
from functions.common.settings import load_settings
from functions.intent.knn import HybridEmbedding, evaluate_held_out, read_examples
from observability.logs import quiet_libraries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=load_settings().intent_threshold)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    quiet_libraries()
    settings = load_settings()
    examples = read_examples()
    embedder = SentenceEmbedder(settings.embedding_dir())
    cache: dict[str, list[float]] = {}

    def dense(texts):  # each text is embedded once across methods and seeds
        missing = [text for text in texts if text not in cache]
        if missing:
            cache.update(zip(missing, embedder.embed(missing)))
        return [cache[text] for text in texts]

    methods = {
        "dense": HybridEmbedding(dense, dense_weight=1.0),
        "lexical": HybridEmbedding(None),
        "mix": HybridEmbedding(dense, dense_weight=settings.intent_dense_weight),
    }
    results = {name: evaluate_held_out(examples, embedding, opts.seeds, opts.threshold) for name, embedding in methods.items()}
    ratios = {f"mix_vs_{name}": round(results["mix"]["route_accuracy"] / results[name]["route_accuracy"], 2)
              for name in ("dense", "lexical")}
    if opts.json:
        print(json.dumps({"examples": len(examples), "threshold": opts.threshold, **results, **ratios}))
        return
    print(f"{len(examples)} labelled examples, 80/20 split per label, {opts.seeds} seeds, threshold {opts.threshold}")
    print(f"{'method':8} {'label acc.':>10} {'route acc.':>10} {'confident':>10} {'route acc. when confident':>26}")
    for name, result in results.items():
        print(f"{name:8} {result['accuracy']:>10.3f} {result['route_accuracy']:>10.3f} {result['confident_share']:>10.3f} "
              f"{result['confident_route_accuracy']:>26.3f}")
    print("route accuracy, " + "  ".join(f"{key}: {value}x" for key, value in ratios.items()))


if __name__ == "__main__":
    main()
