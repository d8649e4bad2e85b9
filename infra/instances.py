"""The instance types a stack may use and what they cost, read from ``infra/instances.yaml``:
what a node offers (so pods and Ray's logical resources are sized from it, and a Serve config
that cannot fit is refused) and what it costs per region (so the cost table is computed, not
typed).

The YAML file is the single source: the autoscaling simulator (``functions/generate/scaling``)
reads the same file directly, so its schema (``spot_share``, ``sizes``, ``regions`` and their
keys) is only ever extended, never renamed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

TABLE_PATH = Path(__file__).resolve().parent / "instances.yaml"


@dataclass(frozen=True)
class NodeType:
    name: str
    vcpus: int
    memory_gib: int
    gpus: int
    gpu_model: str = ""
    nvme_gb: int = 0  # local instance store; the model cache lives there when there is one

    @property
    def ray_cpus(self) -> int:
        """Logical CPUs a Ray pod advertises: one vCPU stays with the kubelet and daemonsets."""
        return self.vcpus - 1


@dataclass(frozen=True)
class RegionPrices:
    region: str
    source: str
    on_demand_usd_h: dict[str, float]
    cache_node_usd_h: dict[str, float]
    eks_control_plane_usd_h: dict[str, float]  # standard / extended support
    nat_gateway_usd_h: float
    load_balancer_usd_h: float

    def node(self, name: str) -> float:
        try:
            return self.on_demand_usd_h[name]
        except KeyError:
            raise ValueError(f"infra/instances.yaml has no {self.region} price for {name}") from None


@dataclass(frozen=True)
class InstanceTable:
    spot_share: float
    sizes: dict[str, NodeType]
    regions: dict[str, RegionPrices]
    end_of_standard_support: dict[str, dt.date]  # Kubernetes version -> last day at the standard price


@cache
def instance_table(path: Path = TABLE_PATH) -> InstanceTable:
    """The table, read once and checked: every size priced in every region."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    sizes = {name: NodeType(name, int(s["vcpus"]), int(s["memory_gib"]), int(s["gpus"]), s.get("gpu_model", ""),
                            int(s.get("nvme_gb", 0))) for name, s in raw["sizes"].items()}
    regions = {}
    for region, r in raw["regions"].items():
        missing = set(sizes) - set(r["on_demand_usd_h"])
        if missing:
            raise ValueError(f"{path.name}: {region} has no price for {', '.join(sorted(missing))}")
        regions[region] = RegionPrices(region, r.get("source", ""), dict(r["on_demand_usd_h"]), dict(r["cache_node_usd_h"]),
                                       dict(r["eks_control_plane_usd_h"]), float(r["nat_gateway_usd_h"]),
                                       float(r["load_balancer_usd_h"]))
    support = {str(version): v["end_of_standard_support"] for version, v in (raw.get("eks_versions") or {}).items()}
    return InstanceTable(float(raw["spot_share"]), sizes, regions, support)


def node_type(name: str, setting: str) -> NodeType:
    try:
        return instance_table().sizes[name]
    except KeyError:
        raise ValueError(f"{setting}: unknown instance type {name!r}; known: {', '.join(instance_table().sizes)} "
                         "(add it with its size and prices to infra/instances.yaml)") from None


def region_prices(region: str) -> RegionPrices:
    try:
        return instance_table().regions[region]
    except KeyError:
        raise ValueError(f"region: no prices for {region!r} in infra/instances.yaml; priced: "
                         f"{', '.join(instance_table().regions)}") from None
