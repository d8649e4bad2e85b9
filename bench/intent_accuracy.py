"""Intent classifier accuracy on held-out splits, side by side: the old default (all-MiniLM-L6-v2
mixed with character n-grams, nearest-neighbour vote, its threshold 0.6) and the new one (the
service's embedder, multilingual-e5 by default, mixed the same way, softmax regression), plus
each new part alone.

The labelled examples in ``knowledge/intents/examples.jsonl`` are split per label (seeded),
80% kept as the classifier's examples and 20% held out; repeated over several seeds and
averaged. FAQ and knowledge questions are one label (one route). Prints, per method: accuracy
(a prediction under the threshold counts as the knowledge route, as in the service), the
share predicted confidently and the accuracy on that share; then new vs old.

    .venv/bin/python bench/intent_accuracy.py [--json] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np

from functions.kb.embedding import Embedder, build_embedder
from functions.common.settings import load_settings
from functions.intent.by_examples import HybridEmbedding, KnnIntent, LinearIntent, evaluate_held_out, read_examples
from observability.logs import quiet_libraries

OLD_DENSE_WEIGHT = 0.3  # the old defaults (before multilingual-e5)
OLD_THRESHOLD = 0.6


def cached(embedder: Embedder):
    cache: dict[str, np.ndarray] = {}

    def dense(texts: Sequence[str]) -> np.ndarray:  # each text is embedded once across methods and seeds
        missing = [text for text in dict.fromkeys(texts) if text not in cache]
        if missing:
            cache.update(zip(missing, embedder.embed_queries(missing)))
        return np.stack([cache[text] for text in texts])

    return dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    quiet_libraries()
    settings = load_settings()
    examples = read_examples()
    minilm = cached(build_embedder(settings.model_copy(update={"embedder": "minilm"})))
    ours = cached(build_embedder(settings))
    weight, threshold = settings.intent_dense_weight, settings.intent_threshold
    methods = {
        "old: minilm mix, knn": (lambda kept: KnnIntent(kept, HybridEmbedding(minilm, OLD_DENSE_WEIGHT)), OLD_THRESHOLD),
        "lexical only, linear": (lambda kept: LinearIntent(kept, HybridEmbedding(None)), threshold),
        f"{settings.embedder} only, linear": (lambda kept: LinearIntent(kept, HybridEmbedding(ours, 1.0)), threshold),
        f"new: {settings.embedder} mix, linear": (lambda kept: LinearIntent(kept, HybridEmbedding(ours, weight)),
                                                  threshold),
    }
    results = {name: {**evaluate_held_out(examples, factory, opts.seeds, cut), "threshold": cut}
               for name, (factory, cut) in methods.items()}
    old, new = results[next(iter(results))], results[list(results)[-1]]
    ratio = round(new["accuracy"] / old["accuracy"], 2)
    if opts.json:
        print(json.dumps({"examples": len(examples), "seeds": opts.seeds, "methods": results, "new_vs_old": ratio},
                         ensure_ascii=False))
        return
    print(f"{len(examples)} labelled examples, 80/20 split per label, {opts.seeds} seeds")
    print(f"{'method':32} {'threshold':>9} {'accuracy':>9} {'confident':>10} {'acc. when confident':>20}")
    for name, result in results.items():
        print(f"{name:32} {result['threshold']:>9.2f} {result['accuracy']:>9.3f} {result['confident_share']:>10.3f} "
              f"{result['confident_accuracy']:>20.3f}")
    print(f"accuracy, new vs old: {ratio}x")


if __name__ == "__main__":
    main()
