"""``wxassist bench generate``: tokens/s of the generate replica at several concurrencies,
with both batching engines, against the naive way, one ``model.generate`` per request in a loop.

Every side is the real generate replica class (``GenerateServer``: prompt building, the engine,
the clean-up and grounding checks) with the same model, dtype, questions and token budget, in
one process and one run: continuous batching and padded static batches, each driven by N
concurrent chats, and the ``single`` engine answering one request after another. The naive
rate is measured before and after the batched runs and averaged, so drift on a shared machine
hits every side. Which batching the default (``generate_engine: auto``) takes depends on the
CPU (``engine_choice.py``): the report names the CPU, its bf16 support and the dtype.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from typing import Any

from functions.common.records import Passage
from functions.common.settings import load_settings

QUESTIONS = [
    "退货政策是什么？", "怎么开发票？", "沙发多久能送到？", "会员积分怎么用？", "实木餐桌怎么保养？",
    "床垫拆封了还能退吗？", "大件家具送货上楼收费吗？", "支持分期付款吗？",
]
PASSAGE = Passage("bench-1", "bench", "faq.jsonl", "退货政策",
                  "自签收之日起7天内，商品未使用、包装完好可申请无理由退货；定制家具不支持无理由退货。", 1.0)


async def _tokens_per_s(server, concurrency: int, requests: int, max_new_tokens: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> int:
        async with gate:
            answer = await server.answer(QUESTIONS[index % len(QUESTIONS)], [PASSAGE], max_new_tokens)
            return answer.tokens_out

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(requests)))
    return sum(tokens) / (time.perf_counter() - started)


def measure(concurrencies: list[int], *, max_new_tokens: int, naive_requests: int,
            overrides: dict[str, Any]) -> dict[str, Any]:
    from functions.generate.deployment import GenerateServer
    from functions.generate.engine_choice import this_machine

    machine = this_machine()
    default = machine.batching()
    batch = max(concurrencies)
    servers = {engine: GenerateServer(settings_overrides={**overrides, "generate_engine": engine, "generate_batch": batch})
               for engine in ("continuous", "static")}
    naive = GenerateServer(settings_overrides={**overrides, "generate_engine": "single"})

    async def run() -> dict[str, Any]:
        naive_before = await _tokens_per_s(naive, 1, naive_requests, max_new_tokens)
        rates = {engine: {c: await _tokens_per_s(server, c, max(2 * c, 4), max_new_tokens) for c in concurrencies}
                 for engine, server in servers.items()}
        naive_after = await _tokens_per_s(naive, 1, naive_requests, max_new_tokens)
        naive_rate = (naive_before + naive_after) / 2

        def rows(engine: str) -> list[dict[str, Any]]:
            return [{"concurrency": c, "tokens_per_s": round(rate, 1), "naive_tokens_per_s": round(naive_rate, 1),
                     "ratio": round(rate / naive_rate, 2)} for c, rate in rates[engine].items()]

        return {
            "results": rows(default),  # the engine generate_engine: auto takes on this machine
            "default_engine": default,
            "continuous_batching": rows("continuous"),
            "static_batch": rows("static"),
            "naive_spread": [round(naive_before, 1), round(naive_after, 1)],
        }

    try:
        report = asyncio.run(run())
        described = servers[default].describe()
    finally:
        for server in (*servers.values(), naive):
            server.close()
    return {**report, **described, "cpu": machine.cpu, "cpu_bf16": machine.cpu_bf16, "max_new_tokens": max_new_tokens}


def cmd_bench_generate(opts: argparse.Namespace) -> int:
    home = tempfile.mkdtemp(prefix="wxassist-bench-generate-")
    settings = load_settings()
    overrides = {"home": home, "model_cache": str(settings.model_cache_dir()), "engine_dtype": opts.dtype}
    if settings.model:
        overrides.update(model=settings.model)
    concurrencies = [int(c) for c in opts.concurrency.split(",")]
    note = print if not opts.json else (lambda *a: print(*a, file=sys.stderr))
    note(f"generate: {opts.max_new_tokens} new tokens a request, concurrency {concurrencies}, "
         f"naive baseline {opts.naive_requests} requests in a loop before and after")
    report = measure(concurrencies, max_new_tokens=opts.max_new_tokens, naive_requests=opts.naive_requests,
                     overrides=overrides)
    if opts.json:
        print(json.dumps(report))
        return 0
    print(f"{report['model']} on {report['device']} ({report['dtype']}); CPU {report['cpu']}, native bf16: "
          f"{'yes' if report['cpu_bf16'] else 'no'}; generate_engine auto takes: {report['default_engine']} batching")
    print(f"naive (one generate per request): {report['results'][0]['naive_tokens_per_s']} tokens/s "
          f"(before/after: {report['naive_spread']})")
    print(f"  {'chats':>5}  {'continuous':>18}  {'static batch':>18}")
    for continuous, static in zip(report["continuous_batching"], report["static_batch"]):
        print(f"  {continuous['concurrency']:>5}  {continuous['tokens_per_s']:8.1f} t/s {continuous['ratio']:5.2f}x"
              f"  {static['tokens_per_s']:8.1f} t/s {static['ratio']:5.2f}x   (x: vs naive)")
    return 0
