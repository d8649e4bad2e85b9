"""Stack guardrails and the RayService's Serve config, without Pulumi's engine or a cloud: a
stack that is unsafe or could not run is refused with the setting named, before any resource
exists."""

from __future__ import annotations

import pytest
import yaml

from infra.config import StackConfigError, parse_stack_config, stack_file_config, stack_values
from functions.common.errors import ConfigurationError
from infra.serve_config import REPO_DIR, load_serve_config


def shipped(stack: str) -> dict:
    """Pulumi.<stack>.yaml's settings, as the program reads them."""
    return stack_values(stack_file_config(stack))


DEV, PROD = shipped("dev"), shipped("prod")


def test_the_gpu_need_is_read_from_the_serve_config():
    prod = load_serve_config("deploy/prod.yaml")
    assert prod.gpus_per_replica == {"generate": 1.0} and prod.cpus_per_replica["generate"] == 4.0
    assert prod.max_replicas["generate"] == 8 and prod.peak_gpus() == 8
    assert load_serve_config("deploy/local.yaml").peak_gpus() == 0


def test_an_invalid_serve_config_is_refused_with_where(tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO_DIR / "deploy" / "prod.yaml").read_text(encoding="utf-8"))
    raw["applications"][0]["deployments"][0]["max_ongoing_requests"] = "lots"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setattr("infra.serve_config.REPO_DIR", tmp_path)
    with pytest.raises(ConfigurationError, match="broken.yaml is not a valid Serve config: .*max_ongoing_requests"):
        load_serve_config("broken.yaml")


def test_stack_files_are_read_as_pulumi_hands_them_over():
    assert DEV["gpu"] == {"instance_type": "g6.xlarge", "instance_types": ["g6.xlarge", "g5.xlarge", "g6.2xlarge",
                                                                           "g5.2xlarge"],
                          "on_demand_base": 0, "spot_max": 2, "min_nodes": 0}
    assert DEV["wechat_appid"].startswith("wx") and "wechat_token" not in DEV  # the keys live in Secrets Manager
    prod = parse_stack_config(PROD)
    assert prod.zones == 3 and prod.kubernetes_version == "1.35"  # "3" counts; "1.35" stays a version
    with pytest.raises(StackConfigError, match="wxassist:gpu: not valid structured config"):
        stack_values({"wxassist:gpu": "{instance_type: g5"})


def test_dev_and_prod_stacks_as_shipped_pass_every_guardrail():
    assert parse_stack_config(DEV).load_serve().peak_gpus() == 2
    assert parse_stack_config(PROD).load_serve().peak_gpus() == 8


GPU_PROD = {"instance_type": "g5.2xlarge", "on_demand_base": 2, "spot_max": 6, "min_nodes": 2}
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("change", "complaint"), [
    ({**PROD, "gpu": {**GPU_PROD, "on_demand_base": 0, "min_nodes": 0}}, "on_demand_base >= 1"),
    ({**PROD, "gpu": {**GPU_PROD, "min_nodes": 0}}, "min_nodes must be >= gpu.on_demand_base"),
    ({**PROD, "redis_replicas": 0}, "redis_replicas >= 1"),
    ({**PROD, "model": "deepseek-r1-distill-qwen-7b"}, "pins the model version"),
    ({**DEV, "bucket_versioning": False}, "bucket_versioning"),
    ({**DEV, "ssh_cidrs": ["10.0.0.0/8"]}, "wxassist:ssh_cidrs: Extra inputs"),  # nodes take no SSH at all
    ({**DEV, "api_cidrs": ["10.0.0/8"]}, "api_cidrs: '10.0.0/8' is not a network"),
    ({**PROD, "vpc_cidr": "10.0.0.0/26"}, "vpc_cidr 10.0.0.0/26 is too small for 3 zones"),
    ({**DEV, "wechat_kind": "weibo"}, "wxassist:wechat_kind"),
    ({**DEV, "environment": "staging"}, "wxassist:environment"),
    ({**DEV, "image_digests": {"cpu": "latest", "gpu": DIGEST}}, "image_digests.cpu must be a sha256"),
    ({**DEV, "image": "registry.example.com/wxassist:0.1.0"}, "wxassist:image: Extra inputs"),  # ECR by digest now
    ({**DEV, "tls_certificate_arn": "arn:aws:acm:x"}, "wxassist:tls_certificate_arn: Extra inputs"),  # the stack's own
    ({**DEV, "callback_domain": "wx.example.org"}, "must be a name inside dns_zone 'example.com'"),
    ({**DEV, "kubernetes_version": "1.29"}, "kubernetes_version 1.29: not in infra/instances.yaml"),
    ({**DEV, "region": "eu-west-1"}, "no prices for 'eu-west-1'"),
    ({**DEV, "gpu": {**DEV["gpu"], "instance_types": ["g5.xlarge", "m6i.xlarge"]}}, "m6i.xlarge has no GPU"),
    ({**DEV, "object_store": "minio"}, "needs minio"),
    ({**DEV, "gpu": {"instance_type": "m6i.xlarge"}}, "has no GPU"),
    ({**DEV, "gpu": {"instance_type": "p9.huge"}}, "unknown instance type 'p9.huge'"),
    ({**DEV, "redis_node_type": "cache.r9.huge"}, "redis_node_type: unknown"),
    ({**DEV, "gpu_typo": {"spot_max": 9}}, "wxassist:gpu_typo: Extra inputs are not permitted"),
    ({**DEV, "gpu": {**DEV["gpu"], "spotmax": 9}}, "wxassist:gpu.spotmax"),
])
def test_unsafe_or_mistyped_stacks_are_refused_naming_the_setting(change, complaint):
    with pytest.raises(StackConfigError, match=complaint):
        parse_stack_config(change)


def test_wechat_keys_in_stack_config_are_refused_naming_where_they_go():
    with pytest.raises(StackConfigError, match="wechat_token: the WeChat keys are not stack config.*Secrets Manager"):
        stack_values({**stack_file_config("dev"), "wxassist:wechat_token": "x"})


def test_pods_are_sized_to_the_smallest_gpu_type_karpenter_may_launch():
    stack = parse_stack_config({**PROD, "gpu": {**GPU_PROD, "instance_types": ["g5.4xlarge", "g5.xlarge"]}})
    assert stack.gpu_fit_node.name == "g5.xlarge"
    with pytest.raises(StackConfigError, match="generate replica asks for 1 GPU and 4 CPU.*g5.xlarge"):
        stack.load_serve()


def test_gpu_nodes_too_few_for_the_serve_config_are_refused():
    stack = parse_stack_config({**PROD, "gpu": {**GPU_PROD, "on_demand_base": 1, "spot_max": 3, "min_nodes": 1}})
    with pytest.raises(StackConfigError, match="asks for 8 GPUs at peak .* hold at most 4"):
        stack.load_serve()


def test_a_gpu_node_too_small_for_one_replica_is_refused():
    # prod.yaml's generate replica asks for 4 CPUs; a g5.xlarge leaves Ray 3.
    stack = parse_stack_config({**PROD, "gpu": {**GPU_PROD, "instance_type": "g5.xlarge"}})
    with pytest.raises(StackConfigError, match="generate replica asks for 1 GPU and 4 CPU.*offers 1 GPU and 3 CPU"):
        stack.load_serve()


def test_cpu_nodes_too_few_for_the_serve_config_are_refused():
    stack = parse_stack_config({**PROD, "cpu": {"instance_type": "m6i.large", "min_nodes": 1, "max_nodes": 2}})
    with pytest.raises(StackConfigError, match="asks for 21 CPUs at peak outside the GPU replicas.*CPU nodes"):
        stack.load_serve()


def test_replicas_that_outlast_a_spot_drain_are_refused(tmp_path):
    slow_stop = tmp_path / "prod.yaml"
    slow_stop.write_text((REPO_DIR / "deploy" / "prod.yaml").read_text().replace(
        "graceful_shutdown_timeout_s: 90", "graceful_shutdown_timeout_s: 300"))
    stack = parse_stack_config({**PROD, "serve_config": str(slow_stop)})
    with pytest.raises(StackConfigError, match="generate replica may take 300 s .* drains in 110 s"):
        stack.load_serve()
