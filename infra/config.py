"""Every knob of a stack, read once from Pulumi stack config and validated before any
resource is declared: a stack that would be unsafe or could not run fails with a clear
message at ``pulumi preview``, not halfway through ``pulumi up``.

Settings are the ``wxassist:<field>`` keys of the stack file, named exactly as the fields
below (structured ones as YAML maps). Unknown keys are refused, so a typo cannot silently
leave a default in place. The WeChat keys are not stack config at all: they live in AWS
Secrets Manager and reach the pods through External Secrets (``components/secrets.py``). The
one Pulumi secret left is an on-prem MinIO's admin password, which only the MinIO provider uses.
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
from infra.instances import NodeType, instance_table, node_type, region_prices
from infra.serve_config import ServeConfig, load_serve_config

NAMESPACE = "wxassist"  # Pulumi config namespace of every setting
INFRA_DIR = Path(__file__).resolve().parent


class StackConfigError(ValueError):
    """The stack's configuration is refused; the message says which setting and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuNodes(_Strict):
    instance_type: str = "g5.xlarge"  # the price reference (cost table, simulator); sizes and prices: infra/instances.yaml
    # Every type Karpenter may launch for a GPU worker (spot capacity comes from many pools, not
    # one): instance_type plus these. Pods are sized to the smallest, so any of them fits one.
    instance_types: list[str] = []
    on_demand_base: int = Field(default=0, ge=0)  # always-on on-demand nodes
    spot_max: int = Field(default=4, ge=0)  # spot nodes on top, for bursts (on-demand stands in when spot runs out)
    min_nodes: int = Field(default=0, ge=0)  # 0: scale to zero when idle
    disk_gb: int = Field(default=100, ge=50)  # root volume: the images; models are cached on the node's NVMe

    @property
    def candidates(self) -> list[str]:
        return list(dict.fromkeys([self.instance_type, *self.instance_types]))


class CpuNodes(_Strict):
    instance_type: str = "m6i.xlarge"
    min_nodes: int = Field(default=1, ge=1)  # the system node group: Ray head, controllers, the first CPU worker
    max_nodes: int = Field(default=4, ge=1)  # the rest come from Karpenter's CPU pool


class ImageDigests(_Strict):
    """What `make image` pushed to the stack's ECR repository: the RayService runs exactly these."""

    cpu: str  # head and CPU workers: Ray's CPU image with wxassist
    gpu: str  # generate's workers: Ray's CUDA image with wxassist and vLLM

    @model_validator(mode="after")
    def _digests(self) -> ImageDigests:
        for name in ("cpu", "gpu"):
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", getattr(self, name)):
                raise ValueError(f"image_digests.{name} must be a sha256:<64 hex> digest (`make image` prints it)")
        return self


class MinioStore(_Strict):
    """An on-prem MinIO the stack manages a bucket in (object_store: minio)."""

    endpoint: str  # host:port, as the MinIO provider and the replicas reach it
    ssl: bool = True
    admin_user: str = "minioadmin"  # its password is the secret wxassist:minio_password
    kms_key: str  # the MinIO KMS key the bucket is encrypted with (SSE-KMS)


class Charts(_Strict):
    """Pinned versions of what the cluster runs besides wxassist: the charts were the newest
    releases found in 2026-09; the collector image was not re-checked."""

    kuberay_operator: str = "1.7.0"  # >= 1.5.1: group `labels`, autoscaler v2, the CRD the tests validate against
    karpenter: str = "1.14.1"
    aws_load_balancer_controller: str = "1.17.1"  # controller v2.17.1
    external_secrets: str = "2.10.0"
    nvidia_device_plugin: str = "0.19.0"
    otel_collector_image: str = "otel/opentelemetry-collector-contrib:0.128.0"
    # Karpenter picks the newest EKS-optimised AL2023 AMI (the NVIDIA variant on GPU types);
    # pin a release (al2023@v2026…) to roll nodes only when you choose.
    node_ami_alias: str = "al2023@latest"


class StackConfig(_Strict):
    environment: Literal["dev", "prod"]
    region: str = "ap-southeast-1"
    zones: int = Field(default=2, ge=2, le=6)  # EKS needs subnets in at least two zones
    vpc_cidr: str = "10.40.0.0/16"
    kubernetes_version: str = "1.35"  # in standard support until 2027-03-27 (infra/instances.yaml)
    serve_config: str  # repo-relative, e.g. deploy/prod.yaml
    # Unset on the first `pulumi up`: the stack creates the ECR repository, `make image` pushes
    # to it and prints these, and the next `pulumi up` deploys the RayService.
    image_digests: ImageDigests | None = None
    model: str  # name@version the generate replicas restore from the bucket
    kb_uri: str = ""  # a Milvus server for retrieve; empty: Milvus Lite inside each pod
    wechat_appid: str  # the Official Account's AppID (WeCom: the corp id); its keys live in Secrets Manager
    wechat_kind: Literal["mp", "wecom"] = "mp"
    namespace: str = "wxassist"  # the Kubernetes namespace
    # The callback: https://<callback_domain>/wechat/<account>, a name in the stack's Route 53
    # zone dns_zone, with a certificate ACM issues for it (WeChat calls https on 443 only).
    callback_domain: str
    dns_zone: str
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
        prices = region_prices(self.region)  # refuses a region with no price table
        for name in self.gpu.candidates:
            node = node_type(name, "gpu.instance_types")
            if node.gpus < 1:
                raise ValueError(f"gpu.instance_types: {name} has no GPU")
            if node.gpus != self.gpu_node.gpus:
                raise ValueError(f"gpu.instance_types: {name} has {node.gpus} GPUs, {self.gpu.instance_type} "
                                 f"{self.gpu_node.gpus}: a Ray GPU group needs one GPU count")
            prices.node(name)
        prices.node(self.cpu.instance_type)
        self.cpu_node  # noqa: B018 - refuses an unknown CPU instance type here, naming the setting
        if self.redis_node_type not in prices.cache_node_usd_h:
            raise ValueError(f"redis_node_type: unknown {self.redis_node_type!r}; known: "
                             f"{', '.join(prices.cache_node_usd_h)}")
        if self.kubernetes_version not in instance_table().end_of_standard_support:
            raise ValueError(f"kubernetes_version {self.kubernetes_version}: not in infra/instances.yaml's "
                             "eks_versions (its support dates set what the control plane costs)")
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
        zone = self.dns_zone.rstrip(".")
        if not self.callback_domain.endswith("." + zone) or not re.fullmatch(r"[a-z0-9.-]+", self.callback_domain):
            raise ValueError(f"callback_domain {self.callback_domain!r} must be a name inside dns_zone {zone!r} "
                             "(e.g. wx.example.com in example.com)")
        return self

    @property
    def gpu_node(self) -> NodeType:
        """The price reference type (gpu.instance_type)."""
        return node_type(self.gpu.instance_type, "gpu.instance_type")

    @property
    def gpu_fit_node(self) -> NodeType:
        """The smallest GPU type Karpenter may launch: pods and Ray's CPU count are sized to it."""
        return min((node_type(name, "gpu.instance_types") for name in self.gpu.candidates),
                   key=lambda node: (node.vcpus, node.memory_gib))

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
        """prod: a NAT gateway per zone, Redis failover across zones, two collectors and controllers."""
        return self.environment == "prod"

    @property
    def callback_url(self) -> str:
        return f"https://{self.callback_domain}/wechat/default"

    def load_serve(self) -> ServeConfig:
        """The stack's Serve config, validated, and checked against the nodes: every GPU
        replica must fit on the smallest GPU node, the node pools must hold every GPU and CPU at
        peak, and a stopping replica must finish its answers inside a worker's drain on a spot notice."""
        serve = load_serve_config(self.serve_config)
        for name, graceful_s in serve.graceful_shutdown_s.items():
            if graceful_s >= WORKER_DRAIN_S:
                raise StackConfigError(
                    f"{self.serve_config}: a stopping {name} replica may take {graceful_s:g} s "
                    f"(graceful_shutdown_timeout_s) to finish its answers, but a worker drains in {WORKER_DRAIN_S:g} s "
                    "on a spot interruption notice: its answers would be cut off")
        node = self.gpu_fit_node
        for name, gpus in serve.gpus_per_replica.items():
            cpus = serve.cpus_per_replica.get(name, 1.0)
            if gpus > node.gpus or cpus > node.ray_cpus:
                raise StackConfigError(
                    f"{self.serve_config}: a {name} replica asks for {gpus:g} GPU and {cpus:g} CPU, "
                    f"but a {node.name} node offers {node.gpus} GPU and {node.ray_cpus} CPU to Ray "
                    "(one vCPU stays with Kubernetes)")
        cpu_capacity = self.cpu.max_nodes * self.cpu_node.ray_cpus
        if serve.peak_cpus_without_gpu() > cpu_capacity:
            raise StackConfigError(
                f"{self.serve_config} asks for {serve.peak_cpus_without_gpu():g} CPUs at peak outside the GPU "
                f"replicas, but the CPU nodes hold at most {cpu_capacity} for Ray")
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


SECRET_KEYS = ("minio_password",)
# Once Pulumi secrets copied into a Kubernetes Secret; refused now, saying where they went.
RETIRED_SECRET_KEYS = ("wechat_token", "wechat_aes_key", "wechat_secret")


def stack_values(config: dict[str, Any]) -> dict[str, Any]:
    """The ``wxassist:*`` settings of a Pulumi config bag (``{"wxassist:gpu": "{...}"}``),
    structured values decoded; secrets are left to ``read_stack_secrets``."""
    values: dict[str, Any] = {}
    for key, raw in config.items():
        namespace, _, name = key.partition(":")
        if namespace != NAMESPACE or name in SECRET_KEYS:
            continue
        if name in RETIRED_SECRET_KEYS:
            raise StackConfigError(
                f"{NAMESPACE}:{name}: the WeChat keys are not stack config: put them in the stack's Secrets "
                "Manager secret (docs/deployment.md, `wechat_secret` output) and remove this key")
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
    """Pulumi secrets from the stack file (``pulumi config set --secret``): only what a provider
    needs at ``pulumi up``; nothing here reaches a pod."""

    minio_password: pulumi.Output[str] | None  # only for object_store: minio


def read_stack_secrets(config: StackConfig) -> StackSecrets:
    settings = pulumi.Config(NAMESPACE)
    return StackSecrets(
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
