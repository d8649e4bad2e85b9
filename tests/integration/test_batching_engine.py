"""The continuous-batching engine on the real demo model (CPU): concurrent requests share
forward passes, and a short request leaves the batch without waiting for a long one."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.common.errors import ModelError
from functions.generate.batching_engine import ContinuousBatchingEngine
from tests.polling import wait_for
from tests.fakes import demo_model_dir


@pytest.fixture(scope="module")
def engine():
    engine = ContinuousBatchingEngine(demo_model_dir(), max_requests=8)
    yield engine
    engine.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_concurrent_requests_each_get_their_own_budget_and_truncation_flag(engine):
    budgets = [4, 8, 12, 16]
    with ThreadPoolExecutor(len(budgets)) as pool:
        completions = list(pool.map(lambda b: engine.complete(ask("Tell me a long story about a cat."), b), budgets))
    for budget, completion in zip(budgets, completions, strict=True):
        assert 0 < completion.tokens_out <= budget
        assert completion.truncated == (completion.tokens_out == budget)  # cut by its budget, not by the model
        assert completion.tokens_in > 5


def test_a_short_request_leaves_the_batch_before_a_long_one_ends(engine):
    finished: dict[str, float] = {}

    def timed(name: str, budget: int) -> None:
        engine.complete(ask("Write a long poem about the sea."), budget)
        finished[name] = time.monotonic()

    with ThreadPoolExecutor(2) as pool:
        long_one = pool.submit(timed, "long", 48)
        wait_for(lambda: len(engine._waiting) == 1, what="the long one at the engine")  # it is generating when the short one joins
        short_one = pool.submit(timed, "short", 2)
        short_one.result()
        assert "long" not in finished  # the short answer came back while the long one still ran
        long_one.result()
    assert finished["short"] < finished["long"]


def test_a_closed_engine_refuses_clearly():
    spare = ContinuousBatchingEngine(demo_model_dir(), max_requests=2)
    spare.close()
    with pytest.raises(ModelError, match="shut down"):
        spare.complete(ask("hi"), 2)

