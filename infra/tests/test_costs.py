"""The cost table README shows is computed from the shipped stacks' instance types."""

from __future__ import annotations

from pytest import approx

from infra.costs import cost_table, idle_cost, peak_cost, shipped_stacks
from infra.instances import (
    CACHE_NODE_USD_H,
    EKS_CONTROL_PLANE_USD_H,
    NAT_GATEWAY_USD_H,
    NETWORK_LOAD_BALANCER_USD_H,
    NODE_TYPES,
    SPOT_SHARE,
)
from infra.serve_config import REPO_DIR

# The counts are what is under test: prices come from the one table.
CPU, GPU = NODE_TYPES["m6i.xlarge"].on_demand_usd_h, NODE_TYPES["g6.xlarge"].on_demand_usd_h


def test_dev_costs_add_up_from_its_parts():
    dev = shipped_stacks()["dev"]
    # The control plane, one NAT gateway, the callback NLB and one small Redis node.
    fixed = (EKS_CONTROL_PLANE_USD_H + NAT_GATEWAY_USD_H + NETWORK_LOAD_BALANCER_USD_H
             + CACHE_NODE_USD_H["cache.t4g.micro"])
    assert idle_cost(dev).fixed == approx(fixed)
    assert idle_cost(dev).total == approx(fixed + CPU)  # one CPU node, no GPU at all
    assert peak_cost(dev).total == approx(fixed + 2 * CPU + 2 * GPU * SPOT_SHARE)  # two spot GPUs


def test_prod_idles_on_its_on_demand_base():
    prod = shipped_stacks()["prod"]
    gpu = NODE_TYPES["g5.2xlarge"].on_demand_usd_h
    assert idle_cost(prod).gpu_on_demand == approx(2 * gpu) and idle_cost(prod).gpu_spot == 0
    assert peak_cost(prod).gpu_spot == approx(6 * gpu * SPOT_SHARE)
    # Three zones, a NAT gateway each; Redis with its replica.
    assert idle_cost(prod).fixed == approx(EKS_CONTROL_PLANE_USD_H + 3 * NAT_GATEWAY_USD_H
                                           + NETWORK_LOAD_BALANCER_USD_H + 2 * CACHE_NODE_USD_H["cache.m7g.large"])


def test_readme_shows_the_computed_table():
    assert cost_table(shipped_stacks()) in (REPO_DIR / "README.md").read_text(encoding="utf-8")
