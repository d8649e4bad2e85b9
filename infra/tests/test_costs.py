"""The cost table README shows is computed from the shipped stacks' instance types."""

from __future__ import annotations

from pytest import approx

from infra.serve_config import REPO_DIR
from infra.costs import cost_table, idle_cost, peak_cost, shipped_stacks


def test_dev_costs_add_up_from_its_parts():
    dev = shipped_stacks()["dev"]
    # EKS 0.10 + one NAT 0.045 + NLB 0.0225 + one cache.t4g.micro 0.016, then nodes.
    assert idle_cost(dev).fixed == approx(0.1835)
    assert idle_cost(dev).total == approx(0.1835 + 0.192)  # one m6i.xlarge, no GPU at all
    assert peak_cost(dev).total == approx(0.1835 + 2 * 0.192 + 2 * 0.805 * 0.40)  # two spot g6.xlarge


def test_prod_idles_on_its_on_demand_base():
    prod = shipped_stacks()["prod"]
    assert idle_cost(prod).gpu_on_demand == approx(2 * 1.212) and idle_cost(prod).gpu_spot == 0
    assert peak_cost(prod).gpu_spot == approx(6 * 1.212 * 0.40)


def test_readme_shows_the_computed_table():
    assert cost_table(shipped_stacks()) in (REPO_DIR / "README.md").read_text(encoding="utf-8")
