"""Every knob of a stack, read once from Pulumi stack config and validated before any
resource is declared: a stack that would be unsafe or could not run fails with a clear
message at ``pulumi preview``, not halfway through ``pulumi up``.

Settings are the ``wxassist:<field>`` keys of the stack file, named exactly as the fields
below (structured ones as YAML maps). Unknown keys are refused, so a typo cannot silently
leave a default in place. Secrets (WeChat keys, the MinIO admin password) are not part of
this model: they stay Pulumi secrets from ``read_stack_secrets`` to the Kubernetes Secret.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from functions.generate.scaling.drain import DEFAULT_DEADLINE_S as WORKER_DRAIN_S
from infra.instances import CACHE_NODE_USD_H, NodeType, node_type
from infra.serve_config import ServeConfig, load_serve_config

NAMESPACE = "wxassist"  # Pulumi config namespace of every setting
INFRA_DIR = Path(__file__).resolve().parent


class StackConfigError(ValueError):
    """The stack's configuration is refused; the message says which setting and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuNodes(_Strict):
    instance_type: str = "g5.xlarge"  # 1x A10G 24 GB; sizes and prices: infra/instances.py
    on_demand_base: int = Field(default=0, ge=0)  # always-on on-demand nodes
    spot_max: int = Field(default=4, ge=0)  # spot nodes on top, for bursts
    min_nodes: int = Field(default=0, ge=0)  # 0: scale to zero when idle
    disk_gb: int = Field(default=200, ge=50)  # image + model cache


class CpuNodes(_Strict):
    instance_type: str = "m6i.xlarge"
    min_nodes: int = Field(default=1, ge=1)  # the Ray head and the system pods live here
    max_nodes: int = Field(default=4, ge=1)


class MinioStore(_Strict):
    """An on-prem MinIO the stack manages a bucket in (object_store: minio)."""

    endpoint: str  # host:port, as the MinIO provider and the replicas reach it
    ssl: bool = True
    admin_user: str = "minioadmin"  # its password is the secret wxassist:minio_password
    kms_key: str  # the MinIO KMS key the bucket is encrypted with (SSE-KMS)


class Charts(_Strict):
    """Pinned versions of what the cluster runs besides wxassist."""

    kuberay_operator: str = "1.4.2"
    nvidia_device_plugin: str = "0.17.3"
    cluster_autoscaler: str = "9.46.6"
    otel_collector_image: str = "otel/opentelemetry-collector-contrib:0.128.0"


class StackConfig(_Strict):
    environment: Literal["dev", "prod"]
    region: str = "ap-southeast-1"
    zones: int = Field(default=2, ge=2, le=6)  # EKS needs subnets in at least two zones
    vpc_cidr: str = "10.40.0.0/16"
    kubernetes_version: str = "1.33"
    serve_config: str  # repo-relative, e.g. deploy/prod.yaml
    image: str  # the wxassist image the Ray pods run (deploy/Dockerfile), pinned
    model: str  # name@version the generate replicas restore from the bucket
    kb_uri: str = ""  # a Milvus server for retrieve; empty: Milvus Lite inside each pod
    wechat_appid: str  # the Official Account's AppID (WeCom: the corp id); its keys are secrets
    wechat_kind: Literal["mp", "wecom"] = "mp"
    namespace: str = "wxassist"  # the Kubernetes namespace
    gpu: GpuNodes = GpuNodes()
    cpu: CpuNodes = CpuNodes()
    object_store: Literal["s3", "minio"] = "s3"
    minio: MinioStore | None = None
    bucket_versioning: bool = True
    noncurrent_version_days: int = Field(default=30, ge=1)  # old model versions' objects expire
    abort_multipart_days: int = Field(default=2, ge=1)  # an interrupted `wxassist model push`
    redis_node_type: str = "cache.t4g.small"
    redis_replicas: int = Field(default=0, ge=0, le=5)  # read replicas; >= 1 gives failover
    otel_backend_endpoint: str = ""  # OTLP/HTTP endpoint the collector exports to; empty: debug exporter
    api_cidrs: list[str] = ["0.0.0.0/0"]  # who may reach the Kubernetes API (it still needs IAM auth)
    tls_certificate_arn: str = ""  # ACM certificate: the callback URL is https on 443; empty: http on 80
    charts: Charts = Charts()

    @model_validator(mode="after")
    def _policy(self) -> StackConfig:
        if self.environment == "prod" and self.gpu.on_demand_base < 1:
            raise ValueError("prod needs gpu.on_demand_base >= 1: spot capacity alone can vanish at once")
        if self.environment == "prod" and self.gpu.min_nodes < self.gpu.on_demand_base:
            raise ValueError("prod keeps its on-demand base running: gpu.min_nodes must be >= gpu.on_demand_base")
        if self.environment == "prod" and self.redis_replicas < 1:
            raise ValueError("prod needs redis_replicas >= 1: the outbox of unsent answers lives in Redis")
        if self.environment == "prod" and "@" not in self.model:
            raise ValueError("prod pins the model version (name@version): a push must not change what serves")
        if self.gpu_node.gpus < 1:
            raise ValueError(f"gpu.instance_type {self.gpu.instance_type} has no GPU")
        self.cpu_node  # noqa: B018 - refuses an unknown CPU instance type here, naming the setting
        if self.redis_node_type not in CACHE_NODE_USD_H:
            raise ValueError(f"redis_node_type: unknown {self.redis_node_type!r}; known: {', '.join(CACHE_NODE_USD_H)}")
        if self.cpu.min_nodes > self.cpu.max_nodes:
            raise ValueError("cpu.min_nodes is more than cpu.max_nodes")
        if self.gpu.min_nodes > self.gpu_node_max:
            raise ValueError("gpu.min_nodes is more than the GPU node groups can hold")
        if not self.bucket_versioning:
            raise ValueError("bucket_versioning must stay true: model versions are restored from it")
        subnet_cidrs(self.vpc_cidr, self.zones)  # refuses a VPC too small for its zones
        for cidr in self.api_cidrs:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(f"api_cidrs: {cidr!r} is not a network") from None
        if self.object_store == "minio" and self.minio is None:
            raise ValueError("object_store minio needs minio: {endpoint, kms_key}")
        if not re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", self.image.rsplit("/", 1)[-1]) \
                or self.image.endswith(":latest"):
            raise ValueError("image must be pinned by a tag other than latest, or by digest")
        return self

    @property
    def gpu_node(self) -> NodeType:
        return node_type(self.gpu.instance_type, "gpu.instance_type")

    @property
    def cpu_node(self) -> NodeType:
        return node_type(self.cpu.instance_type, "cpu.instance_type")

    @property
    def gpu_node_max(self) -> int:
        return self.gpu.on_demand_base + self.gpu.spot_max

    @property
    def gpu_spot_min(self) -> int:
        """Spot GPU nodes kept even when idle: whatever min_nodes the on-demand base does not cover."""
        return max(0, self.gpu.min_nodes - self.gpu.on_demand_base)

    @property
    def nat_gateways(self) -> int:
        """One per zone when highly available (losing a zone's NAT must not cut the others off)."""
        return self.zones if self.highly_available else 1

    @property
    def highly_available(self) -> bool:
        """prod: a NAT gateway per zone, Redis failover across zones, two collectors."""
        return self.environment == "prod"

    def load_serve(self) -> ServeConfig:
        """The stack's Serve config, validated, and checked against the nodes: every GPU
        replica must fit on one node, the node groups must hold every GPU and CPU at peak, and
        a stopping replica must finish its answers inside a worker's drain on a spot notice."""
        serve = load_serve_config(self.serve_config)
        for name, graceful_s in serve.graceful_shutdown_s.items():
            if graceful_s >= WORKER_DRAIN_S:
                raise StackConfigError(
                    f"{self.serve_config}: a stopping {name} replica may take {graceful_s:g} s "
                    f"(graceful_shutdown_timeout_s) to finish its answers, but a worker drains in {WORKER_DRAIN_S:g} s "
                    "on a spot interruption notice: its answers would be cut off")
        node = self.gpu_node
        for name, gpus in serve.gpus_per_replica.items():
            cpus = serve.cpus_per_replica.get(name, 1.0)
            if gpus > node.gpus or cpus > node.ray_cpus:
                raise StackConfigError(
                    f"{self.serve_config}: a {name} replica asks for {gpus:g} GPU and {cpus:g} CPU, "
                    f"but a {self.gpu.instance_type} node offers {node.gpus} GPU and {node.ray_cpus} CPU to Ray "
                    "(one vCPU stays with Kubernetes)")
        cpu_capacity = self.cpu.max_nodes * self.cpu_node.ray_cpus
        if serve.peak_cpus_without_gpu() > cpu_capacity:
            raise StackConfigError(
                f"{self.serve_config} asks for {serve.peak_cpus_without_gpu():g} CPUs at peak outside the GPU "
                f"replicas, but the CPU node group holds at most {cpu_capacity} for Ray")
        capacity = self.gpu_node_max * node.gpus
        if serve.peak_gpus() > capacity:
            raise StackConfigError(
                f"{self.serve_config} asks for {serve.peak_gpus():g} GPUs at peak "
                f"({', '.join(f'{n}: {serve.max_replicas[n]} x {g:g}' for n, g in serve.gpus_per_replica.items())}) "
                f"but the GPU node groups hold at most {capacity}")
        return serve


@dataclass(frozen=True)
class Naming:
    """What every resource is tagged (AWS) or labelled (Kubernetes) with."""

    project: str
    stack: str

    @property
    def prefix(self) -> str:
        return f"{self.project}-{self.stack}"

    @property
    def tags(self) -> dict[str, str]:
        return {"project": self.project, "stack": self.stack, "managed-by": "pulumi"}

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/part-of": self.project, "wxassist/stack": self.stack,
                "app.kubernetes.io/managed-by": "pulumi"}


def subnet_cidrs(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """(public, private) blocks, a /20 each inside a /16: room for thousands of pods per zone
    (the VPC CNI gives every pod a VPC address)."""
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError:
        raise ValueError(f"vpc_cidr {cidr!r} is not a network") from None
    blocks = [str(block) for block in network.subnets(new_prefix=min(network.prefixlen + 4, 28))]
    if len(blocks) < 2 * zones:
        raise ValueError(f"vpc_cidr {cidr} is too small for {zones} zones")
    return blocks[:zones], blocks[zones:2 * zones]


def parse_stack_config(values: dict) -> StackConfig:
    """From the stack's ``wxassist:*`` values; a refusal names the setting."""
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "stack config"
        raise StackConfigError(f"{NAMESPACE}:{where}: {first['msg']}") from None


SECRET_KEYS = ("wechat_token", "wechat_aes_key", "wechat_secret", "minio_password")


def stack_values(config: dict[str, Any]) -> dict[str, Any]:
    """The ``wxassist:*`` settings of a Pulumi config bag (``{"wxassist:gpu": "{...}"}``),
    structured values decoded; secrets are left to ``read_stack_secrets``."""
    values: dict[str, Any] = {}
    for key, raw in config.items():
        namespace, _, name = key.partition(":")
        if namespace != NAMESPACE or name in SECRET_KEYS:
            continue
        # Pulumi hands maps and lists over as JSON text; scalars stay text for pydantic to
        # read by field ("1.33" must stay a version string, "2" becomes a count).
        if isinstance(raw, str) and raw[:1] in ("{", "["):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise StackConfigError(f"{NAMESPACE}:{name}: not valid structured config") from None
        values[name] = raw
    return values


@dataclass(frozen=True)
class StackSecrets:
    """Pulumi secrets from the stack file (``pulumi config set --secret``); they reach the
    pods only through a Kubernetes Secret and never appear in outputs or logs."""

    wechat_token: pulumi.Output[str]
    wechat_aes_key: pulumi.Output[str]
    wechat_secret: pulumi.Output[str]
    minio_password: pulumi.Output[str] | None  # only for object_store: minio


def read_stack_secrets(config: StackConfig) -> StackSecrets:
    settings = pulumi.Config(NAMESPACE)
    return StackSecrets(
        wechat_token=settings.require_secret("wechat_token"),
        wechat_aes_key=settings.require_secret("wechat_aes_key"),
        wechat_secret=settings.require_secret("wechat_secret"),
        minio_password=settings.require_secret("minio_password") if config.object_store == "minio" else None,
    )


def read_stack_config() -> StackConfig:
    """The running stack's settings, validated once."""
    from pulumi.runtime.config import CONFIG, get_config_env

    return parse_stack_config(stack_values({**get_config_env(), **CONFIG.get()}))


def stack_file_config(stack: str) -> dict[str, str]:
    """Pulumi.<stack>.yaml's config as Pulumi hands it to the program: structured values as
    JSON text (for the cost table and tests; ``pulumi up`` reads the file itself)."""
    import yaml

    document = yaml.safe_load((INFRA_DIR / f"Pulumi.{stack}.yaml").read_text(encoding="utf-8"))
    return {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in document["config"].items()}
