"""Stack guardrails and the RayService's Serve config, without Pulumi or a cloud: a stack that
is unsafe or could not run is refused with the setting named, before any resource exists."""

from __future__ import annotations

import pytest
import yaml

from infra.config import StackConfigError, parse_stack_config
from infra.serve_config import REPO_DIR, ServeConfigError, load_serve_config

DEV = {"environment": "dev", "serve_config": "deploy/dev.yaml", "gpu": {"on_demand_base": 0, "spot_max": 2}}
PROD = {"environment": "prod", "serve_config": "deploy/prod.yaml",
        "gpu": {"on_demand_base": 2, "spot_max": 6, "min_nodes": 2}}


def test_the_gpu_need_is_read_from_the_serve_config():
    prod = load_serve_config("deploy/prod.yaml")
    assert prod.gpus_per_replica == {"generate": 1.0}
    assert prod.max_replicas["generate"] == 8 and prod.peak_gpus() == 8
    assert load_serve_config("deploy/local.yaml").peak_gpus() == 0


def test_an_invalid_serve_config_is_refused_with_where(tmp_path, monkeypatch):
    broken = REPO_DIR / "deploy" / "prod.yaml"
    raw = yaml.safe_load(broken.read_text(encoding="utf-8"))
    raw["applications"][0]["deployments"][0]["max_ongoing_requests"] = "lots"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setattr("infra.serve_config.REPO_DIR", tmp_path)
    with pytest.raises(ServeConfigError, match="not a valid Serve config"):
        load_serve_config("broken.yaml")


def test_dev_and_prod_stacks_as_shipped_pass_every_guardrail():
    assert parse_stack_config(DEV).load_serve().peak_gpus() <= 2
    assert parse_stack_config(PROD).load_serve().peak_gpus() == 8


@pytest.mark.parametrize(("change", "complaint"), [
    ({"environment": "prod", "serve_config": "deploy/prod.yaml", "gpu": {"on_demand_base": 0, "spot_max": 8}},
     "on_demand_base"),
    ({**PROD, "gpu": {"on_demand_base": 2, "spot_max": 6, "min_nodes": 0}}, "min_nodes"),
    ({**DEV, "bucket_versioning": False}, "bucket_versioning"),
    ({**DEV, "ssh_cidrs": ["0.0.0.0/0"]}, "SSH to the world"),
    ({**DEV, "environment": "staging"}, "wxassist:environment"),
])
def test_unsafe_stacks_are_refused_naming_the_setting(change, complaint):
    with pytest.raises(StackConfigError, match=complaint):
        parse_stack_config(change)


def test_gpu_nodes_too_few_for_the_serve_config_are_refused():
    stack = parse_stack_config({**PROD, "gpu": {"on_demand_base": 1, "spot_max": 3, "min_nodes": 1}})
    with pytest.raises(StackConfigError, match="asks for 8 GPUs at peak .* hold at most 4"):
        stack.load_serve()
