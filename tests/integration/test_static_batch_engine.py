"""The static-batch engine on the real demo model (CPU): requests waiting together run as one
padded batch, each with its own budget and truncation flag, and padding changes no answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.common.errors import ModelError
from functions.generate.static_batch_engine import StaticBatchEngine
from tests.fakes import demo_model_dir

BUDGETS = [4, 8, 12, 16]


@pytest.fixture(scope="module")
def engine():
    # The batch starts only when full: a test's four requests always share one, however
    # slowly a loaded machine starts their threads.
    engine = StaticBatchEngine(demo_model_dir(), max_requests=len(BUDGETS), gather_s=120.0)
    yield engine
    engine.close()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_requests_waiting_together_share_one_batch_each_with_its_own_budget(engine):
    before = engine.batches
    with ThreadPoolExecutor(len(BUDGETS)) as pool:
        completions = list(pool.map(lambda b: engine.complete(ask("Tell me a long story about a cat."), b), BUDGETS))
    assert engine.batches == before + 1
    assert engine.tokens_per_s_at_start > 0  # measured in the warm-up: the replica's pace starts there
    for budget, completion in zip(BUDGETS, completions, strict=True):
        assert 0 < completion.tokens_out <= budget
        assert completion.truncated == (completion.tokens_out == budget)  # cut by its budget, not by the model
        assert completion.tokens_in > 5


def test_padding_changes_no_answer(engine):
    """Prompts of different lengths in one batch: each answer is the one it gets unpadded
    (greedy decoding, the attention mask hides the padding)."""
    questions = ["Hi.", "What is the capital of France?", "Name three colours of the rainbow, please.",
                 "Write one sentence about the sea."]
    with ThreadPoolExecutor(len(questions)) as pool:
        batched = list(pool.map(lambda q: engine.complete(ask(q), 12).text, questions))
    alone = StaticBatchEngine(demo_model_dir(), max_requests=1)
    try:
        assert batched == [alone.complete(ask(q), 12).text for q in questions]
    finally:
        alone.close()


def test_a_closed_engine_refuses_clearly():
    spare = StaticBatchEngine(demo_model_dir(), max_requests=2, gather_s=0.01)
    spare.close()
    with pytest.raises(ModelError, match="shut down"):
        spare.complete(ask("hi"), 2)
