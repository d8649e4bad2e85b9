"""Every Kubernetes object the program renders, checked against the schema the API server
would check it against, which Pulumi's mocks (they echo inputs back) never do:

* the RayService against KubeRay v1.7.0's CRD (``fixtures/kuberay-v1.7.0``, its
  ``openAPIV3Schema``), closed the way strict field validation closes it: a field the schema
  does not name is an error, not silently pruned;
* core objects (Namespace, Service, Ingress, Deployment, ...) against Kubernetes' own OpenAPI
  models, as packaged offline by ``kubernetes-validate`` for the stack's Kubernetes version;
* the other operators' resources against ``operator_schemas``.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from infra.tests.operator_schemas import SCHEMAS
from infra.tests.stacks import StackRun

FIXTURES = Path(__file__).resolve().parent / "fixtures"
KUBERAY_CRD = FIXTURES / "kuberay-v1.7.0" / "ray.io_rayservices.yaml"
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")  # Pulumi's secret marker
NOT_OBJECTS = ("kubernetes:helm.sh/", "pulumi:providers:")


def reveal(value):
    """Inputs as the API server would receive them: Pulumi's secret wrappers opened."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return reveal(value["value"])
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


def rendered_objects(run: StackRun) -> list[dict]:
    return [reveal(r.inputs) for r in run.resources
            if r.type.startswith("kubernetes:") and not r.type.startswith(NOT_OBJECTS)]


def strict(schema: dict) -> dict:
    """An API server's structural schema as strict field validation applies it: an object
    that names its properties admits no others (unless it preserves unknown fields)."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)
    close(schema)
    return schema


@cache
def kuberay_schema() -> dict:
    crd = yaml.safe_load(KUBERAY_CRD.read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict(version["schema"]["openAPIV3Schema"])
    # metadata is the API server's ObjectMeta, not part of the CRD's schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def schema_errors(obj: dict, kubernetes_version: str) -> list[str]:
    """What the API server would refuse in ``obj`` (empty: nothing)."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    where = f"{kind} {obj.get('metadata', {}).get('name')}"
    if (api_version, kind) == ("ray.io/v1", "RayService"):
        validator = jsonschema.Draft7Validator(kuberay_schema())
    elif (api_version, kind) in SCHEMAS:
        validator = jsonschema.Draft7Validator(SCHEMAS[(api_version, kind)])
    else:
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
            return []
        except kubernetes_validate.ValidationError as exc:
            return [f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}"]
        except kubernetes_validate.SchemaNotFoundError:
            return [f"{where}: no schema for {api_version} {kind} in Kubernetes {kubernetes_version}"]
    return [f"{where}: {'.'.join(map(str, error.path))}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))]
