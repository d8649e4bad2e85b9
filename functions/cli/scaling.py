"""``wxassist simulate-scaling``: compare autoscaling policies on a message trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from functions.generate.scaling.drain import DEFAULT_DEADLINE_S

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_STACK = REPO_DIR / "infra" / "Pulumi.prod.yaml"
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
        help="replay a message trace through generate's replicas under each autoscaling policy: cost and deadlines, "
             "tuned on some seeds and reported on others")
    parser.add_argument("--trace", default="campaign", help="campaign, daily, or a CSV file (first column: arrival time)")
    parser.add_argument("--seeds", default="5-14",
                        help="reported seeds, held out from tuning: A-B, A or A,B,C (default 5-14); a seed draws "
                             "a shipped trace's arrivals, answer lengths and preemptions")
    parser.add_argument("--tune-seeds", default="0-4",
                        help="seeds every tuned setting is chosen on, never reported (default 0-4)")
    parser.add_argument("--stack", default=str(DEFAULT_STACK),
                        help="Pulumi stack file: GPU instance type, region, on-demand base (default infra/Pulumi.prod.yaml)")
    parser.add_argument("--instances", help="instance table with the prices (default: instances.yaml beside --stack)")
    parser.add_argument("--config", help="deploy file whose generate autoscaling is used (default: the stack's serve_config)")
    parser.add_argument("--startup-s", type=seconds(minimum=0.0),
                        help="the cluster's real replica start-up time (default: what the policy assumes)")
    parser.add_argument("--service-s", type=seconds(minimum=0.001),
                        help="the cluster's real mean answer time at a full batch (default: what the policy assumes)")
    parser.add_argument("--on-demand-base", type=int, help="on-demand GPU nodes, paid all the time (default: the stack's)")
    parser.add_argument("--min-replicas", type=int, help="a what-if: generate's min_replicas (default: the deploy file's)")
    parser.add_argument("--preemptions-per-hour", type=float, default=0.1, help="per spot replica (default 0.1)")
    parser.add_argument("--on-demand-price", type=float, help="$/GPU-hour (default: the instance table's)")
    parser.add_argument("--spot-price", type=float, help="$/GPU-hour (default: the table's spot_share of on-demand)")
    parser.add_argument("--plot", help="PNG of load and replicas over time on the first reported seed "
                                       "(default: scaling-<trace>.png)")
    parser.add_argument("--recommend", action="store_true",
                        help="search our policy's utilisation on the tuning seeds for the cheapest that meets the "
                             "deadline, and report deadline_aware at that setting instead of the deploy file's")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also run every policy on clusters whose real service and start-up times are 0.5x and "
                             "2x what the policy assumes")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: {policies: {name: {gpu_hours, cost, …}}}, means over the reported seeds")
    parser.set_defaults(handler=_cmd_simulate)


class _Progress:
    """One tqdm bar on stderr; silent when stderr is not a terminal (CI, logs, --json pipes)."""

    def __init__(self, total: int):
        import sys

        from tqdm import tqdm

        self._bar = tqdm(total=total, desc="simulating", unit="run", leave=False, disable=not sys.stderr.isatty())

    def tick(self) -> None:
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


def _cmd_simulate(opts: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    from functions.common.errors import ConfigurationError
    from functions.generate.scaling import compare as c
    from functions.generate.scaling.stack_prices import read_gpu_prices, shown

    seeds, tune_seeds = c.parse_seeds(opts.seeds), c.parse_seeds(opts.tune_seeds)
    if set(seeds) & set(tune_seeds):
        raise ConfigurationError(f"--seeds {opts.seeds} and --tune-seeds {opts.tune_seeds} overlap: "
                                 "a reported figure must come from seeds nothing was tuned on")
    prices = read_gpu_prices(Path(opts.stack), Path(opts.instances) if opts.instances else None)
    overridden = [flag for flag, value in (("--on-demand-price", opts.on_demand_price), ("--spot-price", opts.spot_price),
                                           ("--on-demand-base", opts.on_demand_base)) if value is not None]
    deploy_file = Path(opts.config) if opts.config else (prices.serve_config or DEFAULT_DEPLOY)
    scaling = c.read_generate_scaling(deploy_file)
    if opts.min_replicas is not None:
        scaling = replace(scaling, autoscaling={**scaling.autoscaling, "min_replicas": opts.min_replicas})
    model = c.cluster_model(scaling, prices, startup_s=opts.startup_s, service_s=opts.service_s,
                            on_demand_base=opts.on_demand_base, spot_preemptions_per_hour=opts.preemptions_per_hour,
                            on_demand_usd_h=opts.on_demand_price, spot_usd_h=opts.spot_price)
    workload = c.Workload(opts.trace)
    grids = len(c.TARGET_ONGOING_GRID) + (len(c.UTILISATION_GRID) if opts.recommend else 0)
    progress = _Progress(grids * len(tune_seeds) + len(seeds) * (1 + (len(c.SCENARIOS) - 1) * opts.sensitivity))
    deployed = scaling.params
    try:
        ray_target, ray_tuning = c.tune_ray_target(workload, tune_seeds, scaling, model, progress.tick)
        tuning = None
        if opts.recommend:  # ours is then tuned like Ray's: on the tuning seeds, reported on the others
            params, tuning = c.recommend(workload, tune_seeds, scaling, model, progress.tick)
            scaling = replace(scaling, params=params)
        runs = c.compare(workload, seeds, scaling, model, ray_target, progress.tick)
        scenarios = c.sensitivity(workload, seeds, scaling, model, ray_target, progress.tick, as_assumed=runs) \
            if opts.sensitivity else None
    finally:
        progress.close()

    trace_name = Path(opts.trace).stem
    first = {name: runs[name].results[0] for name in c.POLICY_ORDER}
    plot_path = Path(opts.plot or f"scaling-{trace_name}.png")
    messages = [len(workload.arrivals(seed)) for seed in seeds]
    c.plot(first, f"{trace_name}, seed {seeds[0]}: {messages[0]} messages", plot_path)
    price_source = prices.source + (f" (overridden: {', '.join(overridden)})" if overridden else "")
    report = {
        "trace": opts.trace, "seeds": list(seeds), "tuning_seeds": list(tune_seeds),
        "messages": round(sum(messages) / len(messages)), "plot": str(plot_path),
        "prices": {"instance_type": prices.instance_type, "region": prices.region,
                   "on_demand_usd_h": model.on_demand_usd_h, "spot_usd_h": round(model.spot_usd_h, 4),
                   "on_demand_base": model.on_demand_base, "source": price_source, "note": prices.price_note},
        "cluster": {"service_s": model.service_s, "startup_s": model.startup_s, "batch": model.batch,
                    "min_replicas": model.min_replicas, "max_replicas": model.max_replicas,
                    "deploy_file": shown(deploy_file)},
        "tuned": {"ray_default_tuned": {"target_ongoing_requests": ray_target, "tuning": ray_tuning.summary()}},
        "policies": {name: runs[name].summary() for name in c.POLICY_ORDER},
        "claims": c.verdict(runs),
    }
    if tuning:
        report["recommended"] = {"policy_kwargs": asdict(scaling.params), "tuning": tuning.summary(),
                                 "deployed": scaling.params == deployed}
    if scenarios:
        report["sensitivity"] = {name: {policy: r.summary() for policy, r in table.items()}
                                 for name, table in scenarios.items()}
    if opts.json:
        print(json.dumps(report))
        return 0
    csv_note = "" if opts.trace in ("campaign", "daily") else " (a CSV trace: seeds vary answer lengths and preemptions, not arrivals)"
    print(f"{opts.trace}: reported seeds {opts.seeds} (held out), tuning seeds {opts.tune_seeds}{csv_note}; "
          f"{report['messages']} messages a seed on average")
    print(f"cluster: {model.min_replicas}-{model.max_replicas} replicas ({shown(deploy_file)}), {model.on_demand_base} on-demand "
          f"base, the rest spot; real start-up {model.startup_s:g} s and answers {model.service_s:g} s "
          f"(the policy assumes {scaling.params.startup_s:g} s and {scaling.params.service_s:g} s)")
    print(f"prices: {prices.instance_type} in {prices.region}, ${model.on_demand_usd_h:.3f}/h on-demand, "
          f"${model.spot_usd_h:.3f}/h spot, from {price_source}"
          + (f"; the table says of them: {prices.price_note}" if prices.price_note else ""))
    if model.min_replicas < model.on_demand_base:
        print(f"note: min_replicas {model.min_replicas} leaves on-demand GPU nodes paid and idle "
              f"(the stack keeps {model.on_demand_base})")
    print(f"ray_default_tuned: target_ongoing_requests {ray_target:g}, chosen on the tuning seeds from "
          f"{', '.join(str(t) for t in c.TARGET_ONGOING_GRID)}")
    if tuning:
        print(f"deadline_aware: utilisation {scaling.params.utilisation:g}, chosen on the tuning seeds from "
              f"{', '.join(f'{u:g}' for u in c.UTILISATION_GRID)} (the deploy file has {deployed.utilisation:g})")
    print()
    print(c.table(runs))
    print(f"\nplot: {plot_path} (seed {seeds[0]})\n\nclaims on the reported seeds:")
    print("\n".join(report["claims"]))
    if tuning:
        print(f"\nrecommended generate autoscaling policy_kwargs (chosen on seeds {opts.tune_seeds}: the cheapest that "
              f"meets {c.REQUIRED_WITHIN_15S:.0%} within 15 s on every one"
              f"{'; the deploy file has them' if scaling.params == deployed else '; the deploy file differs'}):")
        print(json.dumps(asdict(scaling.params)))
    if scenarios:
        print("\nreal service and start-up times against what the policy assumes: mean cost $ / mean share "
              "within 15 s (worst seed):\n")
        print(c.sensitivity_table(scenarios))
        if "†" in c.sensitivity_table(scenarios):
            print(f"† no fixed count up to {model.max_replicas} replicas meets the deadline on some seed: "
                  f"static_needed shows {model.max_replicas}")
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
