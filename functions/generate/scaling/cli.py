"""``wxassist simulate-scaling``: compare autoscaling policies on a message trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from functions.generate.scaling.drain import DEFAULT_DEADLINE_S

REPO_DIR = Path(__file__).resolve().parents[3]
DEFAULT_DEPLOY = REPO_DIR / "deploy" / "prod.yaml"


def seconds(minimum: float):
    def parse(text: str) -> float:
        value = float(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}")
        return value
    return parse


def register_simulate_command(commands) -> None:
    parser = commands.add_parser(
        "simulate-scaling",
        help="replay a message trace through generate's replicas under each autoscaling policy: cost and deadlines")
    parser.add_argument("--trace", default="campaign", help="campaign, daily, or a CSV file (first column: arrival time)")
    parser.add_argument("--seed", type=int, default=0, help="arrivals, answer lengths and preemptions (default 0)")
    parser.add_argument("--config", default=str(DEFAULT_DEPLOY), help="deploy file whose generate autoscaling is used")
    parser.add_argument("--startup-s", type=seconds(minimum=0.0), help="replica start-up time (default: the policy's startup_s)")
    parser.add_argument("--service-s", type=seconds(minimum=0.001), help="mean answer time at a full batch (default: the policy's)")
    parser.add_argument("--on-demand-base", type=int, default=1, help="replicas on on-demand nodes; the rest on spot")
    parser.add_argument("--preemptions-per-hour", type=float, default=0.1, help="per spot replica (default 0.1)")
    parser.add_argument("--on-demand-price", type=float, default=1.212, help="$/GPU-hour (default: g5.2xlarge)")
    parser.add_argument("--spot-price", type=float, default=0.485, help="$/GPU-hour (default: 40%% of on-demand)")
    parser.add_argument("--plot", help="PNG of load and replicas over time (default: scaling-<trace>.png)")
    parser.add_argument("--recommend", action="store_true",
                        help="also search the policy's utilisation for the cheapest that meets the deadline")
    parser.add_argument("--json", action="store_true", help="one JSON object: {policies: {name: {gpu_hours, …}}}")
    parser.set_defaults(handler=_cmd_simulate)


def _cmd_simulate(opts: argparse.Namespace) -> int:
    from dataclasses import asdict

    from functions.generate.scaling.compare import cluster_model, plot, read_generate_scaling, recommend, run_policies, table
    from functions.generate.scaling.traces import load_trace

    scaling = read_generate_scaling(Path(opts.config))
    arrivals = load_trace(opts.trace, opts.seed)
    model = cluster_model(scaling, startup_s=opts.startup_s, service_s=opts.service_s,
                          on_demand_base=opts.on_demand_base, spot_preemptions_per_hour=opts.preemptions_per_hour,
                          on_demand_usd_h=opts.on_demand_price, spot_usd_h=opts.spot_price, seed=opts.seed)
    results = run_policies(arrivals, scaling, model)
    trace_name = Path(opts.trace).stem
    plot_path = Path(opts.plot or f"scaling-{trace_name}.png")
    plot(results, f"{trace_name}: {len(arrivals)} messages", plot_path)
    report = {"trace": opts.trace, "messages": len(arrivals), "plot": str(plot_path),
              "policies": {name: result.summary() for name, result in results.items()}}
    if opts.recommend:
        params, result = recommend(arrivals, scaling, model)
        report["recommended"] = {"policy_kwargs": asdict(params), **result.summary()}
    if opts.json:
        print(json.dumps(report))
        return 0
    print(f"{len(arrivals)} messages ({opts.trace}), {model.startup_s:g} s replica start-up, "
          f"{model.min_replicas}-{model.max_replicas} replicas, {model.on_demand_base} on on-demand\n")
    print(table(results, results["static"].cost))
    print(f"\nplot: {plot_path}")
    if opts.recommend:
        print("\nrecommended generate autoscaling policy_kwargs (meets 99% within 15 s at the lowest cost):")
        print(json.dumps(report["recommended"]["policy_kwargs"]))
    return 0


def register_drain_command(commands) -> None:
    parser = commands.add_parser(
        "drain-node",
        help="a preemption notice: move this node's Serve replicas elsewhere, letting in-flight answers finish")
    parser.add_argument("--node-id", help="the Ray node to drain (default: the one this runs on)")
    parser.add_argument("--deadline-s", type=seconds(minimum=1.0), default=DEFAULT_DEADLINE_S,
                        help="seconds until the node is gone (default %(default)g: a spot notice's 120 less a margin)")
    parser.add_argument("--address", default="auto", help="the Ray cluster to connect to (default: auto)")
    parser.add_argument("--json", action="store_true", help="one JSON object: node_id, drained, replicas_left, waited_s")
    parser.set_defaults(handler=_cmd_drain)


def _cmd_drain(opts: argparse.Namespace) -> int:
    """Exit 0 once no replica is left on the node; 1 if the deadline came first (the pod goes
    anyway: the ingress asks again for whatever those replicas still held)."""
    from dataclasses import asdict

    import ray

    from functions.common.errors import ConfigurationError
    from functions.generate.scaling.drain import drain_node

    try:
        ray.init(address=opts.address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as exc:
        raise ConfigurationError(f"no Ray cluster to drain at --address {opts.address}: {exc}") from exc
    try:
        result = drain_node(opts.node_id, opts.deadline_s)
    finally:
        ray.shutdown()
    if opts.json:
        print(json.dumps(asdict(result)))
    elif result.drained:
        print(f"node {result.node_id} drained in {result.waited_s:.1f} s")
    else:
        print(f"node {result.node_id}: {result.replicas_left} replica(s) still there after {result.waited_s:.1f} s")
    return 0 if result.drained else 1
