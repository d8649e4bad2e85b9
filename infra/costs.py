"""What a stack costs per hour, at idle and at peak, from its instance types and node counts
(``python -m infra.costs`` prints README's table). Counted: EKS control plane, NAT gateways,
the callback load balancer, CPU and GPU nodes, Redis nodes. Not counted: traffic, storage,
logs, and the tracing backend itself."""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import StackConfig, parse_stack_config, stack_file_config, stack_values
from infra.instances import (
    CACHE_NODE_USD_H,
    EKS_CONTROL_PLANE_USD_H,
    NAT_GATEWAY_USD_H,
    NETWORK_LOAD_BALANCER_USD_H,
    SPOT_SHARE,
)


@dataclass(frozen=True)
class HourlyCost:
    fixed: float  # control plane, NAT, load balancer, Redis
    cpu: float
    gpu_on_demand: float
    gpu_spot: float

    @property
    def total(self) -> float:
        return self.fixed + self.cpu + self.gpu_on_demand + self.gpu_spot


def _fixed(config: StackConfig) -> float:
    return (EKS_CONTROL_PLANE_USD_H + config.nat_gateways * NAT_GATEWAY_USD_H + NETWORK_LOAD_BALANCER_USD_H
            + (1 + config.redis_replicas) * CACHE_NODE_USD_H[config.redis_node_type])


def idle_cost(config: StackConfig) -> HourlyCost:
    """No traffic: CPU nodes at their minimum, GPU at the on-demand base plus any spot minimum."""
    gpu = config.gpu_node.on_demand_usd_h
    return HourlyCost(_fixed(config), config.cpu.min_nodes * config.cpu_node.on_demand_usd_h,
                      config.gpu.on_demand_base * gpu, config.gpu_spot_min * gpu * SPOT_SHARE)


def peak_cost(config: StackConfig) -> HourlyCost:
    """Every node group at its maximum."""
    gpu = config.gpu_node.on_demand_usd_h
    return HourlyCost(_fixed(config), config.cpu.max_nodes * config.cpu_node.on_demand_usd_h,
                      config.gpu.on_demand_base * gpu, config.gpu.spot_max * gpu * SPOT_SHARE)


def cost_table(stacks: dict[str, StackConfig]) -> str:
    lines = ["| stack | GPU nodes (idle → peak) | CPU nodes | idle $/h | peak $/h |",
             "| --- | --- | --- | --- | --- |"]
    for name, config in stacks.items():
        gpu, node = config.gpu, config.gpu_node
        idle_gpus = gpu.on_demand_base + config.gpu_spot_min
        gpus = (f"{idle_gpus} → {config.gpu_node_max} × {gpu.instance_type} ({node.gpu_model}): "
                f"{gpu.on_demand_base} on-demand + up to {gpu.spot_max} spot")
        cpus = f"{config.cpu.min_nodes}–{config.cpu.max_nodes} × {config.cpu.instance_type}"
        lines.append(f"| {name} | {gpus} | {cpus} | {idle_cost(config).total:.2f} | {peak_cost(config).total:.2f} |")
    return "\n".join(lines)


def shipped_stacks() -> dict[str, StackConfig]:
    return {name: parse_stack_config(stack_values(stack_file_config(name))) for name in ("dev", "prod")}


if __name__ == "__main__":
    print(cost_table(shipped_stacks()))
