"""Run every policy over one trace, recommend the deadline-aware parameters, draw the plot.

The generate deployment's autoscaling config in a deploy file is the starting point: its
bounds and delays are what Ray's default and our policy run under, and its ``policy_kwargs``
(the policy's model of a replica: batch, service time, start-up) are the cluster the
simulator models unless a flag says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from functions.common.errors import ConfigurationError
from functions.generate.scaling.baselines import QpsTargetPolicy, StaticPolicy, deadline_aware, ray_default
from functions.generate.scaling.policy import DeadlineParams
from functions.generate.scaling.simulator import ClusterModel, PolicyResult, simulate

POLICY_ORDER = ("static", "ray_default", "qps_target", "deadline_aware")
# What "good enough" means when the simulator recommends parameters (the targets).
REQUIRED_WITHIN_15S = 0.99
UTILISATION_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


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


def run_policies(arrivals: list[float], scaling: DeploymentScaling, model: ClusterModel) -> dict[str, PolicyResult]:
    """Every policy under the deployment's own bounds and delays (Ray's default reads its
    target_ongoing_requests; ours ignores it)."""
    policies = [
        StaticPolicy(model.max_replicas),
        ray_default(scaling.autoscaling),
        QpsTargetPolicy(scaling.params.replica_rate, model.min_replicas, model.max_replicas),
        deadline_aware(scaling.autoscaling, scaling.params),
    ]
    return {policy.name: simulate(arrivals, policy, model) for policy in policies}


def cluster_model(scaling: DeploymentScaling, **overrides) -> ClusterModel:
    params, auto = scaling.params, scaling.autoscaling
    model = ClusterModel(service_s=params.service_s, batch=params.batch, startup_s=params.startup_s,
                         min_replicas=int(auto.get("min_replicas", 1)),
                         max_replicas=int(auto.get("max_replicas", 1)),
                         deadline_s=params.deadline_s)
    return replace(model, **{k: v for k, v in overrides.items() if v is not None})


def recommend(arrivals: list[float], scaling: DeploymentScaling, model: ClusterModel) -> tuple[DeadlineParams, PolicyResult]:
    """The cheapest utilisation that answers REQUIRED_WITHIN_15S inside the deadline and loses
    nothing; if none does, the one with the best deadline share."""
    tried = []
    for utilisation in UTILISATION_GRID:
        params = replace(scaling.params, utilisation=utilisation)
        result = simulate(arrivals, deadline_aware(scaling.autoscaling, params), model)
        tried.append((params, result))
    good = [(p, r) for p, r in tried if r.within_15s >= REQUIRED_WITHIN_15S and r.lost == 0]
    if good:
        return min(good, key=lambda pair: pair[1].cost)
    return max(tried, key=lambda pair: pair[1].within_15s)


def table(results: dict[str, PolicyResult], static_cost: float) -> str:
    lines = ["| policy | GPU-hours | cost $ | vs static | passive share | within 15 s | p99 s | lost | peak replicas |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in POLICY_ORDER:
        r = results[name]
        lines.append(f"| {name} | {r.gpu_hours:.2f} | {r.cost:.2f} | {r.cost / static_cost:.2f}x | "
                     f"{r.passive_share:.1%} | {r.within_15s:.2%} | {r.p99_s:.1f} | {r.lost} | {r.peak_replicas} |")
    return "\n".join(lines)


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
        replica_axis.step([t / 60 for t, _, _ in timeline], [n for _, _, n in timeline], where="post", label=name)
    replica_axis.set_ylabel("GPU replicas")
    replica_axis.set_xlabel("minutes")
    replica_axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
