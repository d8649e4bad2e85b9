"""WXA_GENERATE_ENGINE picks the engine class (auto: the faster batching on the machine); vLLM, not a
dependency, fails clearly where absent."""

from __future__ import annotations

import importlib.util

import pytest

from functions.common.errors import ModelError
from functions.common.settings import Settings
from functions.generate.deployment import default_engine
from functions.generate.engine_choice import Machine, cpu_model_name


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



@pytest.mark.parametrize(("machine", "expected"), [
    (Machine("NVIDIA host", cuda=True, cpu_bf16=False), "continuous"),
    (Machine("Intel Xeon (AMX)", cuda=False, cpu_bf16=True), "static"),
    (Machine("AMD EPYC", cuda=False, cpu_bf16=False), "static"),
])
def test_auto_takes_continuous_batching_only_where_it_is_the_faster(machine, expected):
    assert machine.batching() == expected


def test_auto_builds_the_engine_the_machine_calls_for(tmp_path, monkeypatch):
    monkeypatch.setattr("functions.generate.deployment.model_folder", lambda settings: tmp_path)
    monkeypatch.setattr("functions.generate.engine_choice.this_machine", lambda: Machine("AMD EPYC", False, False))
    engine_cls, kwargs = default_engine(Settings(home=tmp_path, generate_batch=16))
    assert engine_cls.__name__ == "StaticBatchEngine" and kwargs["max_requests"] == 16
    monkeypatch.setattr("functions.generate.engine_choice.this_machine", lambda: Machine("GPU host", True, False))
    assert default_engine(Settings(home=tmp_path))[0].__name__ == "ContinuousBatchingEngine"
    assert default_engine(Settings(home=tmp_path, generate_engine="static"))[0].__name__ == "StaticBatchEngine"


def test_the_cpu_model_name_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n")
    assert cpu_model_name(cpuinfo) == "AMD EPYC 7B13"
