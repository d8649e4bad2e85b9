"""What a stack costs per hour, at idle and at peak, from its instance types, node counts and
region (``python -m infra.costs`` prints the table docs/deployment.md shows, one row per stack
and region). Counted: the EKS control plane (at the extended-support price once its Kubernetes
version leaves standard support), NAT gateways, the callback load balancer, CPU and GPU nodes,
Redis nodes. Not counted: traffic, storage, logs, ECR, Secrets Manager, Route 53, and the
tracing backend itself.

Prices come from ``infra/instances.yaml`` only. Spot is estimated at its ``spot_share`` of
on-demand; "peak, no spot" prices every GPU on-demand, which is what a spot drought costs
while on-demand stands in.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass

from infra.config import StackConfig, parse_stack_config, stack_file_config, stack_values
from infra.instances import RegionPrices, instance_table, region_prices


@dataclass(frozen=True)
class HourlyCost:
    fixed: float  # control plane, NAT, load balancer, Redis
    cpu: float
    gpu_on_demand: float
    gpu_spot: float

    @property
    def total(self) -> float:
        return self.fixed + self.cpu + self.gpu_on_demand + self.gpu_spot


def control_plane_support(config: StackConfig, on: dt.date) -> str:
    """``standard`` or ``extended``: what AWS bills the cluster at on that day."""
    end = instance_table().end_of_standard_support[config.kubernetes_version]
    return "standard" if on <= end else "extended"


def _prices(config: StackConfig, region: str | None) -> RegionPrices:
    return region_prices(region or config.region)


def _fixed(config: StackConfig, prices: RegionPrices, on: dt.date) -> float:
    return (prices.eks_control_plane_usd_h[control_plane_support(config, on)]
            + config.nat_gateways * prices.nat_gateway_usd_h + prices.load_balancer_usd_h
            + (1 + config.redis_replicas) * prices.cache_node_usd_h[config.redis_node_type])


def idle_cost(config: StackConfig, *, on: dt.date, region: str | None = None) -> HourlyCost:
    """No traffic: CPU nodes at their minimum, GPU at the on-demand base plus any spot minimum."""
    prices = _prices(config, region)
    gpu = prices.node(config.gpu.instance_type)
    return HourlyCost(_fixed(config, prices, on), config.cpu.min_nodes * prices.node(config.cpu.instance_type),
                      config.gpu.on_demand_base * gpu, config.gpu_spot_min * gpu * instance_table().spot_share)


def peak_cost(config: StackConfig, *, on: dt.date, region: str | None = None, spot: bool = True) -> HourlyCost:
    """Every node pool at its maximum; ``spot=False``: spot gone, on-demand standing in for it."""
    prices = _prices(config, region)
    gpu = prices.node(config.gpu.instance_type)
    cpu = config.cpu.max_nodes * prices.node(config.cpu.instance_type)
    if not spot:
        return HourlyCost(_fixed(config, prices, on), cpu, config.gpu_node_max * gpu, 0.0)
    return HourlyCost(_fixed(config, prices, on), cpu, config.gpu.on_demand_base * gpu,
                      config.gpu.spot_max * gpu * instance_table().spot_share)


def cost_table(stacks: dict[str, StackConfig], *, on: dt.date) -> str:
    """One row per stack and priced region: the stack's own region first."""
    lines = ["| stack | region | GPU nodes (idle → peak) | CPU nodes | control plane | idle $/h | peak $/h "
             "| peak, no spot $/h |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, config in stacks.items():
        gpu, node = config.gpu, config.gpu_node
        idle_gpus = gpu.on_demand_base + config.gpu_spot_min
        gpus = (f"{idle_gpus} → {config.gpu_node_max} × {gpu.instance_type} ({node.gpu_model}): "
                f"{gpu.on_demand_base} on-demand + up to {gpu.spot_max} spot")
        cpus = f"{config.cpu.min_nodes}–{config.cpu.max_nodes} × {config.cpu.instance_type}"
        regions = [config.region, *(r for r in instance_table().regions if r != config.region)]
        for region in regions:
            prices = region_prices(region)
            support = control_plane_support(config, on)
            plane = f"{config.kubernetes_version}, {support} ${prices.eks_control_plane_usd_h[support]:.2f}/h"
            lines.append(
                f"| {name} | {region}{'' if region != config.region else ' (stack)'} | {gpus} | {cpus} | {plane} "
                f"| {idle_cost(config, on=on, region=region).total:.2f} "
                f"| {peak_cost(config, on=on, region=region).total:.2f} "
                f"| {peak_cost(config, on=on, region=region, spot=False).total:.2f} |")
    return "\n".join(lines)


def shipped_stacks() -> dict[str, StackConfig]:
    return {name: parse_stack_config(stack_values(stack_file_config(name))) for name in ("dev", "prod")}


def main(argv: list[str]) -> None:
    """``python -m infra.costs [YYYY-MM-DD]``: the table as billed on that day (default today)."""
    on = dt.date.fromisoformat(argv[0]) if argv else dt.date.today()
    print(f"Hourly cost in US dollars on {on.isoformat()} (prices: infra/instances.yaml; spot at "
          f"{instance_table().spot_share:.0%} of on-demand)\n")
    print(cost_table(shipped_stacks(), on=on))


if __name__ == "__main__":
    main(sys.argv[1:])
