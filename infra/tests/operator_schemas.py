"""Minimal schemas for the other operators' custom resources the stack renders: Karpenter's
NodePool and EC2NodeClass (karpenter.sh/v1, karpenter.k8s.aws/v1; condensed from the CRDs of
Karpenter v1.14.1, Apache-2.0) and External Secrets' SecretStore and ExternalSecret
(external-secrets.io/v1; condensed from its v1 API as documented for chart 2.x, Apache-2.0).

Written by hand, not copied: only the fields the stack uses, each object closed
(``additionalProperties: false``) so a misspelt or misplaced field fails as it would under
``kubectl apply --validate=strict``; enums, patterns and required fields as the CRDs state them.
The CRDs' CEL rules that matter here are checked in ``kuberay_rules.operator_problems``.
Unverified: these were not diffed against the operators' CRD files in CI (the files are not
vendored); a field the stack starts to use must be added here from the CRD first.
"""

from __future__ import annotations

LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
DURATION = r"^(([0-9]+(s|m|h))+|Never)$"


def closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = closed({"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": STRING_MAP,
                   "annotations": STRING_MAP}, ("name",))
TAINT = closed({"key": {"type": "string", "pattern": LABEL_KEY}, "value": {"type": "string"},
                "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]}}, ("key", "effect"))


def resource(api_version: str, kind: str, spec: dict) -> dict:
    return closed({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA,
                   "spec": spec}, ("apiVersion", "kind", "metadata", "spec"))


NODE_POOL = resource("karpenter.sh/v1", "NodePool", closed({
    "template": closed({
        "metadata": closed({"labels": STRING_MAP, "annotations": STRING_MAP}),
        "spec": closed({
            "nodeClassRef": closed({"group": {"type": "string", "minLength": 1}, "kind": {"type": "string", "minLength": 1},
                                    "name": {"type": "string", "minLength": 1}}, ("group", "kind", "name")),
            "requirements": {"type": "array", "maxItems": 100, "items": closed({
                "key": {"type": "string", "pattern": LABEL_KEY, "maxLength": 316},
                "operator": {"enum": ["Gte", "Lte", "In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]},
                "values": {"type": "array", "maxItems": 63, "items": {"type": "string"}},
                "minValues": {"type": "integer", "minimum": 1, "maximum": 50}}, ("key", "operator"))},
            "taints": {"type": "array", "items": TAINT},
            "startupTaints": {"type": "array", "items": TAINT},
            "expireAfter": {"type": "string", "pattern": DURATION},
            "terminationGracePeriod": {"type": "string", "pattern": r"^([0-9]+(s|m|h))+$"},
        }, ("nodeClassRef", "requirements")),
    }, ("spec",)),
    "disruption": closed({
        "consolidationPolicy": {"enum": ["WhenEmpty", "WhenEmptyOrUnderutilized", "Balanced"]},
        "consolidateAfter": {"type": "string", "pattern": DURATION},
        "budgets": {"type": "array", "maxItems": 50, "items": closed({
            "nodes": {"type": "string", "pattern": r"^((100|[0-9]{1,2})%|[0-9]+)$"},
            "reasons": {"type": "array", "items": {"enum": ["Underutilized", "Empty", "Drifted"]}},
            "schedule": {"type": "string"}, "duration": {"type": "string"}}, ("nodes",))},
    }, ("consolidateAfter",)),
    "limits": {"type": "object", "additionalProperties": {"type": "string"}},
    "weight": {"type": "integer", "minimum": 1, "maximum": 100},
}, ("template",)))

EC2_NODE_CLASS = resource("karpenter.k8s.aws/v1", "EC2NodeClass", closed({
    "role": {"type": "string", "minLength": 1},
    "instanceProfile": {"type": "string", "minLength": 1},
    "amiFamily": {"enum": ["AL2", "AL2023", "Bottlerocket", "Custom", "Windows2019", "Windows2022", "Windows2025"]},
    "amiSelectorTerms": {"type": "array", "minItems": 1, "maxItems": 30, "items": closed({
        "alias": {"type": "string", "maxLength": 30,
                  "pattern": r"^(al2|al2023|bottlerocket|windows2019|windows2022|windows2025)@.+$"},
        "id": {"type": "string", "pattern": "ami-[0-9a-z]+"}, "name": {"type": "string"},
        "owner": {"type": "string"}, "tags": STRING_MAP, "ssmParameter": {"type": "string"}})},
    "subnetSelectorTerms": {"type": "array", "minItems": 1, "maxItems": 30, "items": closed({
        "id": {"type": "string", "pattern": "^subnet-[0-9a-z]+$"}, "tags": STRING_MAP})},
    "securityGroupSelectorTerms": {"type": "array", "minItems": 1, "maxItems": 30, "items": closed({
        "id": {"type": "string", "pattern": "^sg-[0-9a-z]+$"}, "name": {"type": "string"}, "tags": STRING_MAP})},
    "metadataOptions": closed({
        "httpEndpoint": {"enum": ["enabled", "disabled"]}, "httpProtocolIPv6": {"enum": ["enabled", "disabled"]},
        "httpPutResponseHopLimit": {"type": "integer", "minimum": 1, "maximum": 64},
        "httpTokens": {"enum": ["required", "optional"]}}),
    "blockDeviceMappings": {"type": "array", "maxItems": 50, "items": closed({
        "deviceName": {"type": "string"}, "rootVolume": {"type": "boolean"},
        "ebs": closed({"volumeSize": {"type": "string", "pattern": r"^[1-9][0-9]{0,4}Gi$"},
                       "volumeType": {"enum": ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]},
                       "encrypted": {"type": "boolean"}, "deleteOnTermination": {"type": "boolean"},
                       "iops": {"type": "integer"}, "throughput": {"type": "integer"},
                       "kmsKeyID": {"type": "string"}})})},
    "instanceStorePolicy": {"enum": ["RAID0"]},
    "tags": STRING_MAP,
    "userData": {"type": "string"},
    "detailedMonitoring": {"type": "boolean"},
    "associatePublicIPAddress": {"type": "boolean"},
}, ("amiSelectorTerms", "securityGroupSelectorTerms", "subnetSelectorTerms")))

SECRET_STORE = resource("external-secrets.io/v1", "SecretStore", closed({
    "provider": closed({"aws": closed({
        "service": {"enum": ["SecretsManager", "ParameterStore"]},
        "region": {"type": "string"},
        "role": {"type": "string"},
        "auth": closed({"jwt": closed({"serviceAccountRef": closed({
            "name": {"type": "string"}, "namespace": {"type": "string"},
            "audiences": {"type": "array", "items": {"type": "string"}}}, ("name",))})}),
    }, ("service",))}),
    "refreshInterval": {"type": "integer"},
}, ("provider",)))

EXTERNAL_SECRET = resource("external-secrets.io/v1", "ExternalSecret", closed({
    "refreshInterval": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
    "secretStoreRef": closed({"name": {"type": "string"}, "kind": {"enum": ["SecretStore", "ClusterSecretStore"]}},
                             ("name",)),
    "target": closed({"name": {"type": "string"}, "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]},
                      "deletionPolicy": {"enum": ["Delete", "Merge", "Retain"]}, "immutable": {"type": "boolean"}}),
    "data": {"type": "array", "items": closed({
        "secretKey": {"type": "string"},
        "remoteRef": closed({"key": {"type": "string"}, "property": {"type": "string"}, "version": {"type": "string"}},
                            ("key",))}, ("secretKey", "remoteRef"))},
    "dataFrom": {"type": "array", "items": closed({"extract": closed({
        "key": {"type": "string"}, "property": {"type": "string"}, "version": {"type": "string"},
        "conversionStrategy": {"enum": ["Default", "Unicode"]},
        "decodingStrategy": {"enum": ["Auto", "Base64", "Base64URL", "None"]}}, ("key",))})},
}))

SCHEMAS = {("karpenter.sh/v1", "NodePool"): NODE_POOL, ("karpenter.k8s.aws/v1", "EC2NodeClass"): EC2_NODE_CLASS,
           ("external-secrets.io/v1", "SecretStore"): SECRET_STORE,
           ("external-secrets.io/v1", "ExternalSecret"): EXTERNAL_SECRET}
