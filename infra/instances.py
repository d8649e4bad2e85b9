"""The instance types a stack may use: what a node offers (so pods and Ray's logical
resources are sized from it, and a Serve config that cannot fit is refused) and what it costs
(so README's cost table is computed, not typed).

Prices are AWS on-demand list prices in US dollars per hour for us-east-1 (Linux), as
published at the time of writing; other regions cost more (Singapore about 20-25% more).
Spot prices move by zone and hour; the table estimates them at ``SPOT_SHARE`` of on-demand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeType:
    vcpus: int
    memory_gib: int
    gpus: int
    on_demand_usd_h: float
    gpu_model: str = ""

    @property
    def ray_cpus(self) -> int:
        """Logical CPUs a Ray pod advertises: one vCPU stays with the kubelet and daemonsets."""
        return self.vcpus - 1


NODE_TYPES: dict[str, NodeType] = {
    "g5.xlarge": NodeType(4, 16, 1, 1.006, "A10G 24 GB"),
    "g5.2xlarge": NodeType(8, 32, 1, 1.212, "A10G 24 GB"),
    "g6.xlarge": NodeType(4, 16, 1, 0.805, "L4 24 GB"),
    "g6.2xlarge": NodeType(8, 32, 1, 0.978, "L4 24 GB"),
    "g6e.xlarge": NodeType(4, 32, 1, 1.861, "L40S 48 GB"),
    "m6i.large": NodeType(2, 8, 0, 0.096),
    "m6i.xlarge": NodeType(4, 16, 0, 0.192),
    "m6i.2xlarge": NodeType(8, 32, 0, 0.384),
}

CACHE_NODE_USD_H: dict[str, float] = {
    "cache.t4g.micro": 0.016,
    "cache.t4g.small": 0.032,
    "cache.t4g.medium": 0.065,
    "cache.m7g.large": 0.158,
}

EKS_CONTROL_PLANE_USD_H = 0.10
NAT_GATEWAY_USD_H = 0.045
NETWORK_LOAD_BALANCER_USD_H = 0.0225
SPOT_SHARE = 0.40  # an estimate: spot GPU capacity has mostly cost 30-50% of on-demand


def node_type(name: str, setting: str) -> NodeType:
    try:
        return NODE_TYPES[name]
    except KeyError:
        raise ValueError(f"{setting}: unknown instance type {name!r}; known: {', '.join(NODE_TYPES)} "
                         "(add it with its size and price to infra/instances.py)") from None
