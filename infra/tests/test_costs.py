"""The cost table is computed from the shipped stacks, in their own region, at the control
plane's real price; every price comes from infra/instances.yaml."""

from __future__ import annotations

import datetime as dt

import yaml
from pytest import approx

from infra.config import parse_stack_config
from infra.costs import control_plane_support, cost_table, idle_cost, peak_cost, shipped_stacks
from infra.instances import TABLE_PATH, instance_table, region_prices
from infra.serve_config import REPO_DIR

ON = dt.date(2026, 9, 1)
SINGAPORE, VIRGINIA = region_prices("ap-southeast-1"), region_prices("us-east-1")
SPOT = instance_table().spot_share


def test_the_table_keeps_the_schema_the_simulator_reads():
    raw = yaml.safe_load(TABLE_PATH.read_text(encoding="utf-8"))
    assert 0 < raw["spot_share"] < 1
    for size in raw["sizes"].values():
        assert {"vcpus", "memory_gib", "gpus", "gpu_model"} <= set(size)
    for region in raw["regions"].values():
        assert set(region["on_demand_usd_h"]) == set(raw["sizes"])
        assert region["eks_control_plane_usd_h"] == {"standard": 0.10, "extended": 0.60}
        assert {"cache_node_usd_h", "nat_gateway_usd_h", "load_balancer_usd_h"} <= set(region)
    # The simulator reads these from the prod stack file as they are.
    prod = yaml.safe_load((REPO_DIR / "infra" / "Pulumi.prod.yaml").read_text(encoding="utf-8"))["config"]
    assert prod["wxassist:region"] in raw["regions"]
    assert prod["wxassist:gpu"]["instance_type"] in raw["sizes"] and prod["wxassist:gpu"]["on_demand_base"] == 2


def test_dev_costs_add_up_from_its_parts_in_its_own_region():
    dev = shipped_stacks()["dev"]
    assert dev.region == "ap-southeast-1"
    cpu, gpu = SINGAPORE.node("m6i.xlarge"), SINGAPORE.node("g6.xlarge")
    # The control plane, one NAT gateway, the callback load balancer and one small Redis node.
    fixed = (0.10 + SINGAPORE.nat_gateway_usd_h + SINGAPORE.load_balancer_usd_h
             + SINGAPORE.cache_node_usd_h["cache.t4g.micro"])
    assert idle_cost(dev, on=ON).fixed == approx(fixed)
    assert idle_cost(dev, on=ON).total == approx(fixed + cpu)  # one CPU node, no GPU at all
    assert peak_cost(dev, on=ON).total == approx(fixed + 2 * cpu + 2 * gpu * SPOT)  # two spot GPUs
    assert peak_cost(dev, on=ON, spot=False).total == approx(fixed + 2 * cpu + 2 * gpu)
    # Priced where it runs: before, every stack was priced at us-east-1's list prices.
    assert idle_cost(dev, on=ON).total > idle_cost(dev, on=ON, region="us-east-1").total


def test_prod_idles_on_its_on_demand_base():
    prod = shipped_stacks()["prod"]
    gpu = SINGAPORE.node("g5.2xlarge")
    assert idle_cost(prod, on=ON).gpu_on_demand == approx(2 * gpu) and idle_cost(prod, on=ON).gpu_spot == 0
    assert peak_cost(prod, on=ON).gpu_spot == approx(6 * gpu * SPOT)
    # Three zones, a NAT gateway each; Redis with its replica.
    assert idle_cost(prod, on=ON).fixed == approx(0.10 + 3 * SINGAPORE.nat_gateway_usd_h + SINGAPORE.load_balancer_usd_h
                                                  + 2 * SINGAPORE.cache_node_usd_h["cache.m7g.large"])


def test_a_version_past_standard_support_costs_the_extended_price():
    dev = shipped_stacks()["dev"]
    old = parse_stack_config({**dev.model_dump(mode="json", exclude_none=True), "kubernetes_version": "1.33"})
    assert control_plane_support(old, ON) == "extended"  # 1.33 left standard support on 2026-07-29
    assert idle_cost(old, on=ON).fixed - idle_cost(dev, on=ON).fixed == approx(0.50)
    assert control_plane_support(dev, ON) == "standard"  # the shipped 1.35: until 2027-03-27


def test_the_table_has_a_row_per_stack_and_region():
    table = cost_table(shipped_stacks(), on=ON)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 2 * len(instance_table().regions)
    assert "| dev | ap-southeast-1 (stack) |" in table and "| prod | us-east-1 |" in table
    assert "1.35, standard $0.10/h" in table


def test_the_deployment_guide_shows_the_computed_table():
    guide = (REPO_DIR / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert "python -m infra.costs" in guide and "On 2026-09-01:" in guide
    assert cost_table(shipped_stacks(), on=ON) in guide
