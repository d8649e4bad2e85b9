"""GPU generation throughput with only torch and transformers: naive (one ``generate`` per
request), static padded batches (the ``@serve.batch`` way), and transformers' continuous
batching (the mechanism of the default engine, ``functions/generate/batching_engine.py``),
by concurrency, with time to first token.

Weights are random, from the architecture's config: a GPU machine here cannot download or
receive the real weights, and with the end-of-sequence token disabled every request
generates exactly ``--new-tokens`` tokens, so throughput does not depend on the weights.
Shapes: the demo model (SmolLM2-135M) and DeepSeek-R1-Distill-Qwen-1.5B (Qwen2 layout).

    python3 bench/gpu_generate.py [--arch smollm2-135m|deepseek-r1-distill-qwen-1.5b] [--json]
    python3 bench/gpu_generate.py --device cpu --concurrency 1,4 --new-tokens 8   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

ARCHITECTURES = {
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "max_position_embeddings": 8192, "rope_theta": 100000.0, "tie_word_embeddings": True},
    "deepseek-r1-distill-qwen-1.5b": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
                                      "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                                      "vocab_size": 151936, "max_position_embeddings": 131072,
                                      "rope_theta": 10000.0, "tie_word_embeddings": False},
}


DEVICE = "cuda"


def sync() -> None:
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def build(arch: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(ARCHITECTURES[arch])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.to(DEVICE).eval()


def prompts(count: int, length: int, vocab: int) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(1)
    return torch.randint(100, vocab - 100, (count, length), generator=generator).tolist()


def naive(model, batch: list[list[int]], new_tokens: int) -> float:
    import torch

    sync()
    started = time.perf_counter()
    for ids in batch:
        with torch.inference_mode():
            model.generate(torch.tensor([ids], device=DEVICE), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
    sync()
    return len(batch) * new_tokens / (time.perf_counter() - started)


def static(model, batch: list[list[int]], new_tokens: int) -> float:
    import torch

    sync()
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(torch.tensor(batch, device=DEVICE), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, eos_token_id=None, pad_token_id=0)
    sync()
    return len(batch) * new_tokens / (time.perf_counter() - started)


def continuous(manager, batch: list[list[int]], concurrency: int, new_tokens: int, tag: str) -> tuple[float, float]:
    """A closed loop of ``concurrency`` chats: a new request joins as soon as one ends."""
    pending = list(enumerate(batch))
    in_flight, first_token_s, tokens = 0, [], 0
    started = time.perf_counter()
    while pending or in_flight:
        while pending and in_flight < concurrency:
            index, ids = pending.pop(0)
            manager.add_request(ids, request_id=f"{tag}-{index}", max_new_tokens=new_tokens, eos_token_id=-1,
                                record_timestamps=True)
            in_flight += 1
        result = manager.get_result(timeout=60)
        if result is None or not result.is_finished():
            continue
        in_flight -= 1
        tokens += len(result.generated_tokens)
        if result.timestamps:
            first_token_s.append(result.timestamps[0] - result.created_time)
    return tokens / (time.perf_counter() - started), statistics.median(first_token_s) if first_token_s else float("nan")


def main() -> int:
    import torch
    import transformers
    from transformers import GenerationConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="smollm2-135m", choices=sorted(ARCHITECTURES))
    parser.add_argument("--concurrency", default="1,4,16,32,64")
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    global DEVICE
    DEVICE = opts.device
    concurrencies = [int(c) for c in opts.concurrency.split(",")]
    model = build(opts.arch)
    vocab = model.config.vocab_size
    warm = prompts(2, opts.prompt_tokens, vocab)
    naive(model, warm, 4)
    naive_rate = naive(model, prompts(4, opts.prompt_tokens, vocab), opts.new_tokens)
    manager = model.init_continuous_batching(generation_config=GenerationConfig(
        max_new_tokens=opts.new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0))
    manager.start()
    continuous(manager, warm, 2, 4, "warm")
    rows = []
    for concurrency in concurrencies:
        batch = prompts(2 * concurrency, opts.prompt_tokens, vocab)
        rate, ttft = continuous(manager, batch, concurrency, opts.new_tokens, f"c{concurrency}")
        static_rate = static(model, batch[:concurrency], opts.new_tokens)
        rows.append({"concurrency": concurrency, "tokens_per_s": round(rate, 1), "ttft_ms": round(ttft * 1000, 1),
                     "static_tokens_per_s": round(static_rate, 1), "naive_tokens_per_s": round(naive_rate, 1),
                     "ratio": round(rate / naive_rate, 2)})
    manager.stop(block=True)
    report = {"arch": opts.arch, "device": torch.cuda.get_device_name() if DEVICE.startswith("cuda") else DEVICE, "torch": torch.__version__,
              "transformers": transformers.__version__, "dtype": "bfloat16", "prompt_tokens": opts.prompt_tokens,
              "new_tokens": opts.new_tokens, "results": rows}
    if opts.json:
        print(json.dumps(report))
        return 0
    print(f"{opts.arch} (random weights) on {report['device']}, bf16, {opts.prompt_tokens}-token prompts, "
          f"{opts.new_tokens} new tokens; naive {naive_rate:.1f} tokens/s")
    for row in rows:
        print(f"  {row['concurrency']:>3} chats  continuous {row['tokens_per_s']:8.1f} tokens/s ({row['ratio']:.1f}x naive, "
              f"TTFT {row['ttft_ms']} ms)  static batch {row['static_tokens_per_s']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
