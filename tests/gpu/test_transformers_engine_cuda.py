"""The generate engine on a CUDA device: bf16 weights, SDPA attention, real generation.
Skipped where there is no GPU (CI, and most development machines)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_engine_loads_bf16_with_sdpa_on_cuda_and_generates():
    from functions.common.settings import Settings
    from functions.generate.transformers_engine import TransformersEngine

    engine = TransformersEngine(Settings().model_dir())
    assert engine.device == "cuda"
    assert next(engine._model.parameters()).dtype == torch.bfloat16
    assert engine._model.config._attn_implementation == "sdpa"
    completion = engine.complete([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=16)
    assert completion.tokens_out > 0 and completion.text.strip()
    assert completion.tokens_in > 0
