"""Every knob of a stack, read once from Pulumi stack config and validated before any
resource is declared: a stack that would be unsafe or could not run fails with a clear
message at ``pulumi preview``, not halfway through ``pulumi up``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from infra.serve_config import ServeConfig, load_serve_config


class StackConfigError(ValueError):
    """The stack's configuration is refused; the message says which setting and why."""


class GpuNodes(BaseModel):
    instance_type: str = "g5.xlarge"  # 1x A10G 24 GB
    gpus_per_node: int = Field(default=1, ge=1)
    on_demand_base: int = Field(default=0, ge=0)  # always-on on-demand nodes
    spot_max: int = Field(default=4, ge=0)  # spot nodes on top, for bursts
    min_nodes: int = Field(default=0, ge=0)  # 0: scale to zero when idle


class CpuNodes(BaseModel):
    instance_type: str = "m6i.xlarge"
    min_nodes: int = Field(default=1, ge=0)
    max_nodes: int = Field(default=4, ge=1)


class StackConfig(BaseModel):
    environment: Literal["dev", "prod"]
    region: str = "ap-east-1"
    serve_config: str  # repo-relative, e.g. deploy/prod.yaml
    gpu: GpuNodes = GpuNodes()
    cpu: CpuNodes = CpuNodes()
    object_store: Literal["s3", "minio"] = "s3"
    bucket_versioning: bool = True
    noncurrent_version_days: int = Field(default=30, ge=1)  # old model versions' objects expire
    abort_multipart_days: int = Field(default=2, ge=1)  # an interrupted `wxassist model push`
    redis_node_type: str = "cache.t4g.small"
    otel_backend_endpoint: str = ""  # where the collector exports; empty: its debug exporter
    ssh_cidrs: list[str] = []  # nodes accept SSH only from these; empty: no SSH at all

    @model_validator(mode="after")
    def _policy(self) -> StackConfig:
        if self.environment == "prod" and self.gpu.on_demand_base < 1:
            raise ValueError("prod needs gpu.on_demand_base >= 1: spot capacity alone can vanish at once")
        if self.environment == "prod" and self.gpu.min_nodes < self.gpu.on_demand_base:
            raise ValueError("prod keeps its on-demand base running: gpu.min_nodes must be >= gpu.on_demand_base")
        if not self.bucket_versioning:
            raise ValueError("bucket_versioning must stay true: model versions are restored from it")
        if "0.0.0.0/0" in self.ssh_cidrs or "::/0" in self.ssh_cidrs:
            raise ValueError("ssh_cidrs must not open SSH to the world")
        return self

    def load_serve(self) -> ServeConfig:
        """The stack's Serve config, validated, and checked against the GPU nodes: the node
        groups must be able to hold every GPU the Serve config asks for at peak."""
        serve = load_serve_config(self.serve_config)
        capacity = (self.gpu.on_demand_base + self.gpu.spot_max) * self.gpu.gpus_per_node
        if serve.peak_gpus() > capacity:
            raise StackConfigError(
                f"{self.serve_config} asks for {serve.peak_gpus():g} GPUs at peak "
                f"({', '.join(f'{n}: {serve.max_replicas[n]} x {g:g}' for n, g in serve.gpus_per_replica.items())}) "
                f"but the GPU node groups hold at most {capacity}")
        return serve


def parse_stack_config(values: dict) -> StackConfig:
    """From the stack's ``wxassist:*`` values; a refusal names the setting."""
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "stack config"
        raise StackConfigError(f"wxassist:{where}: {first['msg']}") from None
