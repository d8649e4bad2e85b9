"""What the simulator charges for a GPU replica, read from infra's data files.

Prices live in one place, ``infra/instances.yaml`` (the table infra's cost report reads too);
what a stack runs lives in its ``infra/Pulumi.<stack>.yaml``. Both are read here by path with
PyYAML: functions/ sits below infra/ in the layering and never imports its code.

- GPU on-demand $/h = ``regions[<wxassist:region>].on_demand_usd_h[<wxassist:gpu.instance_type>]``;
- spot $/h = that × ``spot_share`` (spot moves by zone and hour: the table's estimate);
- on-demand base = ``wxassist:gpu.on_demand_base``: nodes the stack keeps running, paid
  whether or not a replica is on them;
- GPU nodes at most = ``on_demand_base + spot_max``;
- the stack's Serve config (``wxassist:serve_config``), the deploy file its replicas follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.common.errors import ConfigurationError

CONFIG_PREFIX = "wxassist:"


@dataclass(frozen=True)
class GpuPrices:
    instance_type: str
    region: str
    on_demand_usd_h: float
    spot_share: float
    on_demand_base: int  # GPU nodes on on-demand, kept running
    spot_max: int  # spot GPU nodes on top, for bursts
    serve_config: Path | None  # the stack's deploy file, resolved
    source: str  # the files these came from, as the report names them
    price_note: str = ""  # what the table says of its region's figures (its optional ``source``)

    @property
    def spot_usd_h(self) -> float:
        return self.on_demand_usd_h * self.spot_share

    @property
    def max_gpu_nodes(self) -> int:
        return self.on_demand_base + self.spot_max


def _load(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping at the top")
    return data


def _get(mapping: Any, path: Path, *keys: str) -> Any:
    value = mapping
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise ConfigurationError(f"{path}: no {'.'.join(keys[:depth + 1])}")
        value = value[key]
    return value


def _number(value: Any, path: Path, name: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
            or (integer and not isinstance(value, int)):
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{path}: {name} must be {kind} >= 0, not {value!r}")
    return value


def read_gpu_prices(stack_file: Path, instances_file: Path | None = None) -> GpuPrices:
    """The stack's GPU node type, region and base, priced from the instance table (by default
    ``instances.yaml`` beside the stack file)."""
    instances_file = instances_file or stack_file.parent / "instances.yaml"
    stack = _get(_load(stack_file), stack_file, "config")
    region = _get(stack, stack_file, f"{CONFIG_PREFIX}region")
    gpu = _get(stack, stack_file, f"{CONFIG_PREFIX}gpu")
    instance_type = _get(gpu, stack_file, "instance_type")
    on_demand_base = int(_number(gpu.get("on_demand_base", 0), stack_file, "gpu.on_demand_base", integer=True))
    spot_max = int(_number(gpu.get("spot_max", 0), stack_file, "gpu.spot_max", integer=True))
    serve_config = stack.get(f"{CONFIG_PREFIX}serve_config")

    table = _load(instances_file)
    spot_share = _number(_get(table, instances_file, "spot_share"), instances_file, "spot_share")
    if spot_share > 1:
        raise ConfigurationError(f"{instances_file}: spot_share is a share of on-demand, not {spot_share!r}")
    price = _get(table, instances_file, "regions", str(region), "on_demand_usd_h", str(instance_type))
    on_demand = _number(price, instances_file, f"regions.{region}.on_demand_usd_h.{instance_type}")
    note = table["regions"][str(region)].get("source") or ""
    # infra resolves serve_config against the repository root, the stack file's folder's parent.
    repo = stack_file.resolve().parent.parent
    return GpuPrices(instance_type=str(instance_type), region=str(region), on_demand_usd_h=float(on_demand),
                     spot_share=float(spot_share), on_demand_base=on_demand_base, spot_max=spot_max,
                     serve_config=(repo / serve_config) if serve_config else None,
                     source=f"{shown(instances_file)} + {shown(stack_file)}", price_note=str(note))


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
