"""WXA_GENERATE_ENGINE picks the engine class; vLLM, not a dependency, fails clearly where absent."""

from __future__ import annotations

import importlib.util

import pytest

from functions.common.errors import ModelError
from functions.common.settings import Settings
from functions.generate.deployment import default_engine


def test_the_vllm_setting_selects_the_vllm_engine_with_the_replica_batch(tmp_path, monkeypatch):
    monkeypatch.setattr("functions.generate.deployment.model_folder", lambda settings: tmp_path)
    engine_cls, kwargs = default_engine(Settings(home=tmp_path, generate_engine="vllm", generate_batch=48))
    assert engine_cls.__name__ == "VllmEngine"
    assert kwargs == {"model_dir": tmp_path, "dtype": "auto", "max_requests": 48}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_without_vllm_installed_the_engine_refuses_to_start_and_says_what_is_missing(tmp_path):
    from functions.generate.vllm_engine import VllmEngine

    with pytest.raises(ModelError, match="needs the vllm package"):
        VllmEngine(tmp_path)

