"""The policies the simulator compares, each behind the same small interface.

- ``static``: a fixed count all the time: ``max_replicas`` (peak provisioning), or the fewest
  that meet the deadline on a trace (``compare.static_needed`` searches for it).
- ``ray_default``: Ray Serve's own default policy (``replica_queue_length_autoscaling_policy``)
  with the deployment's autoscaling config (``compare.ray_tuned``: at another target).
- ``qps_target``: a request-rate target per replica, as SkyServe scales: the rate over the
  last minute over a per-replica QPS target, with SkyServe's default up/down delays.
- ``deadline_aware``: ours (``policy.DeadlineAwarePolicy``).

Serve-run policies (Ray's default and ours) go through ``ServeRunPolicy``, which applies what
Serve's controller applies around any policy with Ray's own helpers: the cold-start fast
path, scaling factors, min/max bounds, and the up/down delays on the simulated clock.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Callable

from functions.generate.scaling.policy import DeadlineAwarePolicy, DeadlineParams


class StaticPolicy:
    name = "static"
    look_back_s = 1.0

    def __init__(self, replicas: int):
        self.replicas = replicas

    def target(self, now, in_system, arrivals_window, current, target) -> int:
        return self.replicas


class ServeRunPolicy:
    """A Serve policy function, stepped the way Serve's controller steps it."""

    def __init__(self, name: str, policy: Callable[[Any], tuple[float, dict]], autoscaling: dict):
        from ray.serve.config import AutoscalingConfig

        self.name = name
        self.policy = policy
        self.config = AutoscalingConfig(**autoscaling)
        self.look_back_s = self.config.look_back_period_s
        self.state: dict = {}

    def target(self, now, in_system, arrivals_window, current, target) -> int:
        from ray.serve.autoscaling_policy import (
            _apply_delay_logic,
            _apply_scaling_factors,
            _extract_internal_policy_state,
            _get_cold_start_scale_up_replicas,
        )

        config = self.config
        ctx = SimpleNamespace(
            current_num_replicas=current, target_num_replicas=target, total_num_requests=in_system,
            total_queued_requests=0.0, policy_state=dict(self.state), current_time=now, config=config,
            capacity_adjusted_min_replicas=config.min_replicas, capacity_adjusted_max_replicas=config.max_replicas)
        cold_start = _get_cold_start_scale_up_replicas(ctx)  # from zero, Serve skips every delay
        if cold_start is not None:
            return cold_start
        desired, user_state = self.policy(ctx)
        desired = _apply_scaling_factors(desired, current, config)
        desired = max(config.min_replicas, min(config.max_replicas, desired))
        # Serve keeps its delay bookkeeping across ticks next to the policy's own state.
        state = {**(user_state or {}), **_extract_internal_policy_state(self.state)}
        decided, self.state = _apply_delay_logic(max(0, desired), target, config, state, _now=now)
        return decided


def ray_default(autoscaling: dict) -> ServeRunPolicy:
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

    return ServeRunPolicy("ray_default", replica_queue_length_autoscaling_policy, autoscaling)


def deadline_aware(autoscaling: dict, params: DeadlineParams) -> ServeRunPolicy:
    from dataclasses import asdict

    return ServeRunPolicy("deadline_aware", DeadlineAwarePolicy(**asdict(params)), autoscaling)


class QpsTargetPolicy:
    """SkyServe's request-rate autoscaler: replicas = rate / target QPS per replica; a change
    must hold for ``upscale_delay_s`` (300 s) or ``downscale_delay_s`` (1200 s) first."""

    name = "qps_target"
    look_back_s = 1.0

    def __init__(self, qps_per_replica: float, min_replicas: int, max_replicas: int,
                 upscale_delay_s: float = 300.0, downscale_delay_s: float = 1200.0):
        self.qps_per_replica = qps_per_replica
        self.bounds = (min_replicas, max_replicas)
        self.delays = (upscale_delay_s, downscale_delay_s)
        self.since: float | None = None
        self.direction = 0

    def target(self, now, in_system, arrivals_window, current, target) -> int:
        desired = math.ceil(arrivals_window / self.qps_per_replica) if arrivals_window > 0 else 0
        desired = max(self.bounds[0], min(self.bounds[1], desired))
        direction = (desired > target) - (desired < target)
        if direction == 0:
            self.since, self.direction = None, 0
            return target
        if direction != self.direction or self.since is None:
            self.since, self.direction = now, direction
        delay = self.delays[0] if direction > 0 else self.delays[1]
        if now - self.since >= delay:
            self.since, self.direction = None, 0
            return desired
        return target
