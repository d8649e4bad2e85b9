"""The batching engines on a CUDA device: bf16, concurrent requests sharing steps, budgets
and truncation per request. Skipped without a GPU (CI); vLLM's only where it is installed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

QUESTIONS = ["What is the capital of France?", "Name three colours.", "Count from one to ten.", "Say hello."]


def _concurrent_answers(engine, budgets):
    with ThreadPoolExecutor(len(budgets)) as pool:
        return list(pool.map(lambda pair: engine.complete([{"role": "user", "content": pair[0]}], pair[1]),
                             zip(QUESTIONS, budgets)))


def _assert_budgets_hold(completions, budgets):
    for completion, budget in zip(completions, budgets):
        assert 0 < completion.tokens_out <= budget
        assert completion.tokens_in > 0
        if completion.truncated:  # cut by the budget, not ended by the model
            assert completion.tokens_out == budget


def test_continuous_batching_runs_bf16_on_cuda_and_keeps_each_budget():
    from functions.common.settings import Settings
    from functions.generate.batching_engine import ContinuousBatchingEngine

    engine = ContinuousBatchingEngine(Settings().model_dir(), max_requests=8)
    try:
        assert engine.device == "cuda" and engine.dtype == torch.bfloat16
        budgets = [4, 32, 8, 64]
        completions = _concurrent_answers(engine, budgets)
        _assert_budgets_hold(completions, budgets)
        assert completions[0].truncated  # 4 tokens cannot hold an answer to it
    finally:
        engine.close()


def test_vllm_engine_answers_concurrent_requests_within_their_budgets():
    pytest.importorskip("vllm")
    from functions.common.settings import Settings
    from functions.generate.vllm_engine import VllmEngine

    engine = VllmEngine(Settings().model_dir(), max_requests=8, gpu_memory_utilization=0.5)
    try:
        budgets = [4, 32, 8, 64]
        _assert_budgets_hold(_concurrent_answers(engine, budgets), budgets)
    finally:
        engine.close()
