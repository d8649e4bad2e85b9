"""Run every policy over a trace on many seeds, tune on some seeds and report on others, try
the policies on a cluster that is not what they assume, draw the plot.

Seeds. A seed draws a shipped trace's arrivals, every answer's length and the preemptions (a
CSV trace's arrivals are fixed: there a seed varies only the last two). Anything that is
chosen is chosen on the *tuning* seeds (default 0-4): our utilisation (``recommend``; the
deploy files carry its choice and a test keeps them so) and Ray's ``target_ongoing_requests``
for ``ray_default_tuned``. The *reported* seeds (default 5-14) are held out: nothing is chosen
on them, so a figure from them is not one a setting was fitted to.

The policies (``POLICY_ORDER``):
- ``static``: ``max_replicas`` all the time, what peak provisioning pays;
- ``static_needed``: the fewest fixed replicas that meet the deadline on that very seed's
  trace, searched per reported seed. An oracle no operator has, so it flatters static;
- ``ray_default``: Ray's default policy at the deploy file's ``target_ongoing_requests``;
- ``ray_default_tuned``: Ray's default policy at the best ``target_ongoing_requests`` of
  ``TARGET_ONGOING_GRID`` on the tuning seeds;
- ``qps_target``: SkyServe's request-rate target;
- ``deadline_aware``: ours, with the deploy file's ``policy_kwargs``.

"Meets the deadline" is one rule for every choice (``meets``): at least REQUIRED_WITHIN_15S
of messages answered within 15 s on every seed, none lost. The best of several settings is
the cheapest that meets it; if none does, the one with the best mean deadline share.

The deploy file's autoscaling config gives the bounds and delays Ray's default and ours run
under, and its ``policy_kwargs`` are what our policy believes a replica does (batch, service
time, start-up). The simulated cluster takes those as its truth unless told otherwise
(``cluster_model`` overrides; ``SCENARIOS`` for the sensitivity table).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from functions.common.errors import ConfigurationError
from functions.generate.scaling.baselines import QpsTargetPolicy, ServeRunPolicy, StaticPolicy, deadline_aware, ray_default
from functions.generate.scaling.policy import DeadlineParams
from functions.generate.scaling.simulator import ClusterModel, PolicyResult, simulate
from functions.generate.scaling.stack_prices import GpuPrices
from functions.generate.scaling.traces import load_trace

POLICY_ORDER = ("static", "static_needed", "ray_default", "ray_default_tuned", "qps_target", "deadline_aware")
# What "good enough" means wherever a setting is chosen (the target).
REQUIRED_WITHIN_15S = 0.99
# Each grid reaches past where the cheapest setting could lie: utilisation up to all of a
# replica, Ray's target past max_ongoing_requests (where it no longer scales on this load).
UTILISATION_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
TARGET_ONGOING_GRID = (2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96)
TUNING_SEEDS = tuple(range(0, 5))
HELD_OUT_SEEDS = tuple(range(5, 15))
# The cluster as it really is, against what the policy believes: (name, service x, start-up x).
SCENARIOS = (("as assumed", 1.0, 1.0), ("service 0.5x", 0.5, 1.0), ("service 2x", 2.0, 1.0),
             ("start-up 0.5x", 1.0, 0.5), ("start-up 2x", 1.0, 2.0), ("both 0.5x", 0.5, 0.5), ("both 2x", 2.0, 2.0))

NONE_MEETS = "none meets"  # static_needed's setting when no count up to max_replicas does

Tick = Callable[[], None]


def _no_tick() -> None:
    pass


def parse_seeds(text: str) -> tuple[int, ...]:
    """``5-14``, ``7`` or ``0,3,9``: the seeds, in order, each once."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            low, high = int(first), int(last if dash else first)
            if low < 0 or high < low:
                raise ValueError
            seeds.extend(seed for seed in range(low, high + 1) if seed not in seeds)
    except ValueError:
        raise ConfigurationError(f"seeds {text!r}: expected A-B, A or A,B,C (whole numbers >= 0)") from None
    return tuple(seeds)


@dataclass(frozen=True)
class DeploymentScaling:
    autoscaling: dict  # generate's autoscaling_config without the policy
    params: DeadlineParams


def read_generate_scaling(deploy_file: Path) -> DeploymentScaling:
    from functions.common.serve_config import APP_NAME, read_serve_config_file

    options = read_serve_config_file(deploy_file).deployment_options(APP_NAME).get("generate", {})
    autoscaling = dict(options.get("autoscaling_config") or {})
    if not autoscaling:
        raise ConfigurationError(f"{deploy_file} has no autoscaling generate deployment")
    policy = autoscaling.pop("policy", None) or {}
    try:
        params = DeadlineParams(**(policy.get("policy_kwargs") or {}))
    except (TypeError, ValueError) as exc:  # what Serve would refuse at deploy time
        raise ConfigurationError(f"{deploy_file}: generate's policy_kwargs: {exc}") from None
    return DeploymentScaling(autoscaling, params)


def cluster_model(scaling: DeploymentScaling, prices: GpuPrices, **overrides) -> ClusterModel:
    """The deployment's bounds on the stack's nodes and prices; service and start-up as the
    policy assumes them unless an override says what they really are. Serve cannot run more
    replicas than the stack has GPU nodes."""
    params, auto = scaling.params, scaling.autoscaling
    model = ClusterModel(on_demand_usd_h=prices.on_demand_usd_h, spot_usd_h=prices.spot_usd_h,
                         on_demand_base=prices.on_demand_base,
                         service_s=params.service_s, batch=params.batch, startup_s=params.startup_s,
                         min_replicas=int(auto.get("min_replicas", 1)),
                         max_replicas=min(int(auto.get("max_replicas", 1)), prices.max_gpu_nodes),
                         deadline_s=params.deadline_s)
    return replace(model, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Runs:
    """One policy over several seeds."""

    results: tuple[PolicyResult, ...]

    def values(self, name: str) -> list[float]:
        return [float(getattr(result, name)) for result in self.results]

    def mean(self, name: str) -> float:
        return statistics.fmean(self.values(name))

    def worst(self, name: str) -> float:
        """The worst seed's figure: the most for costs, times and losses, the least for shares."""
        values = self.values(name)
        return min(values) if name in ("passive_share", "within_15s") else max(values)

    def spread(self, name: str) -> float:
        values = self.values(name)
        return max(values) - min(values)

    @property
    def setting(self) -> str:
        settings = sorted({result.setting for result in self.results}, key=lambda s: (len(s), s))
        return settings[0] if len(settings) == 1 else f"{settings[0]} … {settings[-1]}"

    def summary(self) -> dict:
        """Means over the seeds under the single-seed names, worst and spread (max - min) beside."""
        report: dict = {"gpu_hours": round(self.mean("gpu_hours"), 3), "cost": round(self.mean("cost"), 2),
                        "passive_share": round(self.mean("passive_share"), 4),
                        "within_15s": round(self.mean("within_15s"), 4), "lost": round(self.mean("lost"), 2)}
        for name, digits in (("cost", 2), ("within_15s", 4), ("passive_share", 4), ("lost", 0), ("p99_s", 1)):
            report[f"{name}_worst"] = round(self.worst(name), digits)
        report["cost_spread"] = round(self.spread("cost"), 2)
        report["within_15s_spread"] = round(self.spread("within_15s"), 4)
        report["peak_replicas"] = int(self.worst("peak_replicas"))
        report["seeds"] = len(self.results)
        report["setting"] = self.setting
        return report


def meets(results: Iterable[PolicyResult]) -> bool:
    return all(r.within_15s >= REQUIRED_WITHIN_15S and r.lost == 0 for r in results)


def choose(tried: list[tuple[object, Runs]]) -> tuple[object, Runs]:
    """The cheapest setting that meets the deadline; if none does, the best mean deadline share."""
    good = [(setting, runs) for setting, runs in tried if meets(runs.results)]
    if good:
        return min(good, key=lambda pair: pair[1].mean("cost"))
    return max(tried, key=lambda pair: (pair[1].mean("within_15s"), -pair[1].mean("cost")))


class Workload:
    """A trace's arrivals per seed, drawn once."""

    def __init__(self, trace: str):
        self.trace = trace
        self._arrivals: dict[int, list[float]] = {}

    def arrivals(self, seed: int) -> list[float]:
        if seed not in self._arrivals:
            self._arrivals[seed] = load_trace(self.trace, seed)
        return self._arrivals[seed]


def _over_seeds(workload: Workload, seeds: Iterable[int], model: ClusterModel,
                make_policy: Callable[[], object], setting: str, tick: Tick) -> Runs:
    results = []
    for seed in seeds:
        results.append(replace(simulate(workload.arrivals(seed), make_policy(), replace(model, seed=seed)),
                               setting=setting))
        tick()
    return Runs(tuple(results))


def ray_tuned(scaling: DeploymentScaling, target_ongoing_requests: float) -> ServeRunPolicy:
    policy = ray_default({**scaling.autoscaling, "target_ongoing_requests": target_ongoing_requests})
    policy.name = "ray_default_tuned"
    return policy


def tune_ray_target(workload: Workload, seeds: Iterable[int], scaling: DeploymentScaling, model: ClusterModel,
                    tick: Tick = _no_tick) -> tuple[int, Runs]:
    """Ray's target_ongoing_requests, swept over TARGET_ONGOING_GRID on the tuning seeds."""
    seeds = tuple(seeds)
    tried = [(target, _over_seeds(workload, seeds, model, lambda t=target: ray_tuned(scaling, t), f"target {target}", tick))
             for target in TARGET_ONGOING_GRID]
    return choose(tried)


def recommend(workload: Workload, seeds: Iterable[int], scaling: DeploymentScaling, model: ClusterModel,
              tick: Tick = _no_tick) -> tuple[DeadlineParams, Runs]:
    """Our utilisation, searched over UTILISATION_GRID on the tuning seeds."""
    seeds = tuple(seeds)
    tried = []
    for utilisation in UTILISATION_GRID:
        params = replace(scaling.params, utilisation=utilisation)
        tried.append((params, _over_seeds(workload, seeds, model, lambda p=params: deadline_aware(scaling.autoscaling, p),
                                          f"utilisation {utilisation:g}", tick)))
    return choose(tried)


def static_needed(arrivals: list[float], model: ClusterModel) -> PolicyResult:
    """The fewest fixed replicas that meet the deadline on this trace, climbing from the fewest
    the bounds allow and taking the first that meets (a replica more is taken never to hurt);
    ``max_replicas``, marked, if none does."""
    low = max(1, model.min_replicas)
    result = None
    for replicas in range(low, max(low, model.max_replicas) + 1):
        policy = StaticPolicy(replicas)
        policy.name = "static_needed"
        result = replace(simulate(arrivals, policy, model), setting=f"{replicas} replicas")
        if meets([result]):
            return result
    return replace(result, setting=f"{result.setting} ({NONE_MEETS})")


def run_seed(arrivals: list[float], scaling: DeploymentScaling, model: ClusterModel,
             ray_target: float) -> dict[str, PolicyResult]:
    """Every policy on one seed's trace, under the deployment's own bounds and delays."""
    params = scaling.params
    policies = [
        (StaticPolicy(model.max_replicas), f"{model.max_replicas} replicas"),
        (ray_default(scaling.autoscaling), f"target {scaling.autoscaling.get('target_ongoing_requests', 2):g}"),
        (ray_tuned(scaling, ray_target), f"target {ray_target:g}"),
        (QpsTargetPolicy(params.replica_rate, model.min_replicas, model.max_replicas),
         f"{params.replica_rate:.1f} msg/s per replica"),
        (deadline_aware(scaling.autoscaling, params), f"utilisation {params.utilisation:g}"),
    ]
    results = {policy.name: replace(simulate(arrivals, policy, model), setting=setting) for policy, setting in policies}
    results["static_needed"] = static_needed(arrivals, model)
    return {name: results[name] for name in POLICY_ORDER}


def compare(workload: Workload, seeds: Iterable[int], scaling: DeploymentScaling, model: ClusterModel,
            ray_target: float, tick: Tick = _no_tick) -> dict[str, Runs]:
    """Every policy on every seed: name -> its runs, in POLICY_ORDER."""
    per_seed = []
    for seed in seeds:
        per_seed.append(run_seed(workload.arrivals(seed), scaling, replace(model, seed=seed), ray_target))
        tick()
    return {name: Runs(tuple(results[name] for results in per_seed)) for name in POLICY_ORDER}


def sensitivity(workload: Workload, seeds: Iterable[int], scaling: DeploymentScaling, model: ClusterModel,
                ray_target: float, tick: Tick = _no_tick,
                as_assumed: dict[str, Runs] | None = None) -> dict[str, dict[str, Runs]]:
    """Every policy, tuned as it is, on clusters whose real service and start-up times are a
    multiple of what the policy assumes (``SCENARIOS``). static_needed is searched again on
    each: it knows the real cluster, the others do not."""
    seeds = tuple(seeds)
    table = {}
    for name, service_x, startup_x in SCENARIOS:
        if (service_x, startup_x) == (1.0, 1.0) and as_assumed is not None:
            table[name] = as_assumed
            continue
        real = replace(model, service_s=model.service_s * service_x, startup_s=model.startup_s * startup_x)
        table[name] = compare(workload, seeds, scaling, real, ray_target, tick)
    return table


def _percent(share: float) -> str:
    return f"{share:.2%}"


def table(runs: dict[str, Runs]) -> str:
    """Means over the seeds, and the worst seed where a bad seed matters."""
    base = runs["static_needed"].mean("cost")
    lines = ["| policy | setting | GPU-hours | cost $ mean | cost $ worst | cost spread | vs static_needed | "
             "passive share | within 15 s mean | within 15 s worst | p99 s worst | lost worst | peak replicas |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in POLICY_ORDER:
        r = runs[name]
        lines.append(f"| {name} | {r.setting} | {r.mean('gpu_hours'):.2f} | {r.mean('cost'):.2f} | "
                     f"{r.worst('cost'):.2f} | {r.spread('cost'):.2f} | {r.mean('cost') / base:.2f}x | "
                     f"{r.mean('passive_share'):.1%} | {_percent(r.mean('within_15s'))} | "
                     f"{_percent(r.worst('within_15s'))} | {r.worst('p99_s'):.1f} | {int(r.worst('lost'))} | "
                     f"{int(r.worst('peak_replicas'))} |")
    return "\n".join(lines)


def sensitivity_table(scenarios: dict[str, dict[str, Runs]]) -> str:
    """Per policy and scenario: mean cost $ / mean share within 15 s (worst seed's share); a
    static_needed cell marked † found no fixed count that meets the deadline on some seed."""
    names = list(scenarios)
    lines = ["| policy | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for policy in POLICY_ORDER:
        cells = []
        for name in names:
            r = scenarios[name][policy]
            mark = " †" if any(NONE_MEETS in result.setting for result in r.results) else ""
            cells.append(f"{r.mean('cost'):.2f} / {_percent(r.mean('within_15s'))} "
                         f"({_percent(r.worst('within_15s'))}){mark}")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(runs: dict[str, Runs]) -> list[str]:
    """The claims the issue asks of ours on the reported seeds, each with whether it holds."""
    ours, needed, tuned = runs["deadline_aware"], runs["static_needed"], runs["ray_default_tuned"]
    cost, share = ours.mean("cost"), ours.mean("within_15s")
    tuned_cost, tuned_share = tuned.mean("cost"), tuned.mean("within_15s")
    beats_ray = (cost <= tuned_cost and share >= tuned_share) and (cost < tuned_cost or share > tuned_share)
    return [
        f"{'yes' if share >= REQUIRED_WITHIN_15S else 'NO '}  ours answers {_percent(share)} within 15 s "
        f"(mean; worst seed {_percent(ours.worst('within_15s'))}), at least {REQUIRED_WITHIN_15S:.0%}",
        f"{'yes' if ours.worst('lost') == 0 else 'NO '}  ours loses nothing (worst seed: {int(ours.worst('lost'))})",
        f"{'yes' if cost < needed.mean('cost') else 'NO '}  ours costs less than static_needed "
        f"(${cost:.2f} against ${needed.mean('cost'):.2f}, mean)",
        f"{'yes' if beats_ray else 'NO '}  ours beats ray_default_tuned on cost or deadline share without losing on the "
        f"other (${cost:.2f} and {_percent(share)} against ${tuned_cost:.2f} and {_percent(tuned_share)})",
    ]


def plot(results: dict[str, PolicyResult], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    figure, (load_axis, replica_axis) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    first = results[POLICY_ORDER[0]].timeline
    load_axis.plot([t / 60 for t, _, _ in first], [rate for _, rate, _ in first], color="black")
    load_axis.set_ylabel("messages/s (1 min)")
    load_axis.set_title(title)
    for name in POLICY_ORDER:
        timeline = results[name].timeline
        replica_axis.step([t / 60 for t, _, _ in timeline], [n for _, _, n in timeline], where="post",
                          label=f"{name} ({results[name].setting})")
    replica_axis.set_ylabel("GPU replicas")
    replica_axis.set_xlabel("minutes")
    replica_axis.legend(loc="center right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
