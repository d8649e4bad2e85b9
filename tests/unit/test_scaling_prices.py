"""The simulator's prices and on-demand base: read from infra's instance table and stack file
(one source), never copied; a fixture pair pins the reading, the real pair pins the wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from functions.common.errors import ConfigurationError
from functions.generate.scaling.compare import cluster_model, read_generate_scaling
from functions.generate.scaling.simulator import ClusterModel
from functions.generate.scaling.stack_prices import read_gpu_prices

REPO = Path(__file__).resolve().parents[2]

TABLE = """\
spot_share: 0.25
sizes:
  g9.small: {vcpus: 8, memory_gib: 32, gpus: 1, gpu_model: "X 24 GB"}
regions:
  xx-test-1:
    source: "fixture figures"
    on_demand_usd_h: {g9.small: 2.0, m9.large: 0.1}
    cache_node_usd_h: {cache.t9.micro: 0.02}
    eks_control_plane_usd_h: {standard: 0.10, extended: 0.60}
    nat_gateway_usd_h: 0.05
    load_balancer_usd_h: 0.02
"""

STACK = """\
config:
  wxassist:environment: prod
  wxassist:region: xx-test-1
  wxassist:serve_config: deploy/prod.yaml
  wxassist:gpu:
    instance_type: g9.small
    on_demand_base: 3
    spot_max: 5
    min_nodes: 3
"""


def stack_pair(tmp_path: Path, table: str = TABLE, stack: str = STACK) -> Path:
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "instances.yaml").write_text(table, encoding="utf-8")
    (infra / "Pulumi.test.yaml").write_text(stack, encoding="utf-8")
    return infra / "Pulumi.test.yaml"


def test_the_gpu_price_is_the_tables_for_the_stacks_region_and_instance_type(tmp_path):
    prices = read_gpu_prices(stack_pair(tmp_path))
    assert (prices.instance_type, prices.region) == ("g9.small", "xx-test-1")
    assert prices.on_demand_usd_h == 2.0 and prices.spot_usd_h == pytest.approx(0.5)  # 25% of on-demand
    assert (prices.on_demand_base, prices.max_gpu_nodes) == (3, 8)
    assert prices.serve_config == tmp_path / "deploy" / "prod.yaml"  # repo-relative, as infra reads it
    assert "instances.yaml" in prices.source and "Pulumi.test.yaml" in prices.source
    assert prices.price_note == "fixture figures"  # the table's own word on its region's figures


def test_a_price_that_is_not_in_the_table_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigurationError, match=r"instances.yaml: no regions.xx-test-1.on_demand_usd_h.g9.huge"):
        read_gpu_prices(stack_pair(tmp_path, stack=STACK.replace("g9.small", "g9.huge")))
    (tmp_path / "infra" / "Pulumi.test.yaml").write_text(STACK.replace("xx-test-1", "yy-test-2"), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="no regions.yy-test-2"):
        read_gpu_prices(tmp_path / "infra" / "Pulumi.test.yaml")
    (tmp_path / "infra" / "instances.yaml").write_text(TABLE.replace("spot_share: 0.25", "spot_share: 40"),
                                                       encoding="utf-8")
    (tmp_path / "infra" / "Pulumi.test.yaml").write_text(STACK, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="spot_share is a share"):
        read_gpu_prices(tmp_path / "infra" / "Pulumi.test.yaml")
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_gpu_prices(tmp_path / "infra" / "Pulumi.missing.yaml")


def test_the_cluster_is_priced_and_bounded_by_the_stack(tmp_path):
    prices = read_gpu_prices(stack_pair(tmp_path, stack=STACK.replace("spot_max: 5", "spot_max: 2")))
    model = cluster_model(read_generate_scaling(REPO / "deploy" / "prod.yaml"), prices)
    assert (model.on_demand_usd_h, model.spot_usd_h, model.on_demand_base) == (2.0, 0.5, 3)
    assert model.max_replicas == 5  # the deploy file allows 8; the stack has 3 + 2 GPU nodes
    with pytest.raises(TypeError):
        ClusterModel()  # no price of its own to fall back on


def test_the_prod_stack_is_priced_from_infras_table_and_uses_its_paid_base():
    stack_file = REPO / "infra" / "Pulumi.prod.yaml"
    stack = yaml.safe_load(stack_file.read_text(encoding="utf-8"))["config"]
    table = yaml.safe_load((REPO / "infra" / "instances.yaml").read_text(encoding="utf-8"))
    prices = read_gpu_prices(stack_file)
    gpu = stack["wxassist:gpu"]
    assert prices.on_demand_usd_h == table["regions"][stack["wxassist:region"]]["on_demand_usd_h"][gpu["instance_type"]]
    assert prices.spot_usd_h == pytest.approx(prices.on_demand_usd_h * table["spot_share"])
    assert prices.on_demand_base == gpu["on_demand_base"]
    assert prices.serve_config == REPO / "deploy" / "prod.yaml"
    # generate keeps a replica on every on-demand GPU node the stack pays for, and asks for no
    # more replicas than the stack has GPU nodes.
    autoscaling = read_generate_scaling(prices.serve_config).autoscaling
    assert autoscaling["min_replicas"] >= prices.on_demand_base
    assert autoscaling["max_replicas"] <= prices.max_gpu_nodes
