"""Checks the mocks cannot make: every rendered Kubernetes object against its real schema, and
the RayService against the KubeRay rules no schema expresses (kuberay_rules). Each rule is also
run on what the program rendered before issue 22 (fixtures/legacy), where it must find the bug
it names: a rule that passes both is not testing anything."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from infra.tests import kuberay_rules
from infra.tests.k8s_schemas import FIXTURES, rendered_objects, reveal, schema_errors
from infra.tests.stacks import StackRun

RAY_SERVICE = "kubernetes:ray.io/v1:RayService"


def legacy(stack: str) -> dict:
    return json.loads((FIXTURES / "legacy" / f"{stack}.json").read_text(encoding="utf-8"))


def legacy_ray_service(stack: str) -> dict:
    return next(r["inputs"]["spec"] for r in legacy(stack)["resources"] if r["type"] == RAY_SERVICE)


def ray_service(run: StackRun) -> dict:
    return reveal(run.one(RAY_SERVICE).inputs["spec"])


# ---- schemas ------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod", "on_prem"])
def test_every_rendered_object_passes_its_real_schema(stack, request):
    run = request.getfixturevalue(stack)
    objects = rendered_objects(run)
    kinds = {o["kind"] for o in objects}
    assert {"RayService", "NodePool", "EC2NodeClass", "ExternalSecret", "SecretStore", "Ingress", "Namespace",
            "Deployment", "Service", "ServiceAccount", "ConfigMap"} <= kinds
    errors = [error for obj in objects for error in schema_errors(obj, "1.35")]
    assert errors == []


def test_the_schemas_refuse_what_the_api_server_would(prod):
    """Must-fail twins: a misplaced field, a wrong type, a value outside an enum."""
    spec = copy.deepcopy(ray_service(prod))
    spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["portz"] = []
    spec["rayClusterConfig"]["autoscalerOptions"]["version"] = "v3"
    errors = schema_errors({"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"},
                            "spec": spec}, "1.35")
    assert any("portz" in e for e in errors) and any("'v3' is not one of" in e for e in errors)
    pool = copy.deepcopy(next(o for o in rendered_objects(prod) if o["kind"] == "NodePool"))
    pool["spec"]["template"]["spec"]["requirements"][0]["operator"] = "Within"
    assert schema_errors(pool, "1.35")
    ingress = copy.deepcopy(next(o for o in rendered_objects(prod) if o["kind"] == "Ingress"))
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = "serve"
    assert schema_errors(ingress, "1.35")


# ---- KubeRay's rules ---------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_ray_service_breaks_no_kuberay_rule(stack, request):
    assert kuberay_rules.problems(ray_service(request.getfixturevalue(stack))) == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_old_program_broke_them(stack):
    """Each bug of issue 22 that lives in the RayService, found in what the program rendered then."""
    found = "\n".join(kuberay_rules.problems(legacy_ray_service(stack)))
    assert "'dashboard port is not found'" in found  # the Serve app was never deployed
    assert "rayStartParams['labels'] is refused" in found  # spot placement by accident
    assert "autoscaler v1 ignores label selectors" in found
    assert "no gcsFaultToleranceOptions" in found and "the head asks for 0.5 CPU" in found
    if stack == "dev":
        assert "never become Ready (kuberay#4994)" in found  # HeadOnly proxies


def test_head_ports_all_or_none():
    spec = copy.deepcopy(legacy_ray_service("prod"))
    head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["ports"] = []
    assert kuberay_rules.head_port_problems(spec) == []  # KubeRay's defaults
    head["ports"] = [{"name": name, "containerPort": port} for name, port in
                     (("dashboard", 8265), ("gcs-server", 6379), ("client", 10001), ("serve", 8000))]
    assert kuberay_rules.head_port_problems(spec) == []


def test_a_headonly_proxy_layout_is_refused_with_or_without_a_custom_probe(dev):
    spec = ray_service(dev)
    document = yaml.safe_load(spec["serveConfigV2"])
    document["proxy_location"] = "HeadOnly"
    headonly = {**spec, "serveConfigV2": yaml.safe_dump(document)}
    assert any("never become Ready" in p for p in kuberay_rules.readiness_problems(headonly))
    probed = copy.deepcopy(headonly)
    for group in probed["rayClusterConfig"]["workerGroupSpecs"]:
        group["template"]["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}}
    assert any("no Serve proxy into the serve Service" in p for p in kuberay_rules.readiness_problems(probed))


def test_a_fixed_gcs_namespace_or_inline_password_is_refused(prod):
    spec = copy.deepcopy(ray_service(prod))
    options = spec["rayClusterConfig"]["gcsFaultToleranceOptions"]
    options["externalStorageNamespace"] = "wxassist"
    options["redisPassword"] = {"value": "hunter2"}
    found = "\n".join(kuberay_rules.fault_tolerance_problems(spec))
    assert "share GCS state" in found and "written into the RayService" in found


def test_a_group_whose_label_lies_about_its_market_is_found(prod):
    spec = copy.deepcopy(ray_service(prod))
    spot = next(g for g in spec["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu-spot")
    spot["template"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] = "on-demand"
    assert kuberay_rules.market_problems(spec) == [
        "group gpu-spot: labelled spot but its pods land on on-demand nodes"]
