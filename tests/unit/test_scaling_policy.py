"""The deadline-aware policy on hand-built contexts with an injected clock, as Ray tests its
own policies: a steady load, a burst, start-up time, idleness, and Serve's wrapper around it."""

from __future__ import annotations

import math

import pytest
from ray.serve.autoscaling_policy import _apply_autoscaling_config, replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from functions.generate.scaling.policy import (
    MEMORY_KEY,
    DeadlineAwarePolicy,
    DeadlineParams,
    LoadSample,
    PolicyMemory,
    plan,
)

PARAMS = DeadlineParams(deadline_s=15.0, service_s=4.0, batch=48, startup_s=45.0, utilisation=0.8)


def context(*, now: float, in_system: float, replicas: int, state: dict | None = None,
            target: int | None = None, **config) -> AutoscalingContext:
    settings = {"min_replicas": 0, "max_replicas": 16, "upscale_delay_s": 0, "downscale_delay_s": 300, **config}
    return AutoscalingContext(
        deployment_id=None, deployment_name="generate", app_name="wxassist", current_num_replicas=replicas,
        target_num_replicas=replicas if target is None else target, running_replicas=[],
        total_num_requests=in_system, total_queued_requests=0.0, aggregated_metrics={}, raw_metrics={},
        capacity_adjusted_min_replicas=settings["min_replicas"], capacity_adjusted_max_replicas=settings["max_replicas"],
        policy_state=state or {}, last_scale_up_time=None, last_scale_down_time=None, current_time=now,
        config=AutoscalingConfig(**settings))


def run(samples: list[tuple[float, float, int]], params: DeadlineParams = PARAMS) -> list:
    memory, decisions = PolicyMemory(), []
    for now, in_system, replicas in samples:
        decision = plan(LoadSample(now, in_system, replicas), memory, params)
        memory = decision.memory
        decisions.append(decision)
    return decisions


def test_a_steady_load_gets_replicas_for_its_rate_at_the_planned_utilisation():
    # 20 msgs/s of 4 s answers: 80 in the system at steady state; a replica sustains 48*0.8/4 = 9.6/s.
    decisions = run([(t, 80.0, 3) for t in range(0, 120, 1)])
    assert decisions[-1].rate == pytest.approx(20.0, rel=0.05)
    assert math.ceil(decisions[-1].replicas) == 3  # 20 / 9.6 = 2.08


def test_a_burst_starts_replicas_before_any_queue_and_sooner_than_rays_default():
    # The rate climbs 1 msg/s every second; one replica holds 48 answers at once.
    samples, in_system = [], 4.0
    for t in range(0, 25):
        in_system += (1.0 + t) - min(in_system, 48) / 4.0
        samples.append((float(t), max(0.0, in_system), 1))
    ours = [math.ceil(decision.replicas) for decision in run(samples)]
    rays = [math.ceil(replica_queue_length_autoscaling_policy(
        context(now=t, in_system=n, replicas=1, target_ongoing_requests=32))[0]) for t, n, _ in samples]
    first_queue = next(t for t, n, _ in samples if n > 48)
    ours_first = next(t for (t, _, _), wanted in zip(samples, ours) if wanted > 1)
    rays_first = next(t for (t, _, _), wanted in zip(samples, rays) if wanted > 1)
    assert ours_first < first_queue  # a second replica is asked for while nothing waits yet
    assert ours_first < rays_first
    assert ours[-1] > rays[-1]  # and more of them: it plans for the rate when they are ready


def test_a_longer_start_up_asks_for_more_replicas_in_the_same_burst():
    samples = [(float(t), 2.0 * t * t / 10, 1) for t in range(0, 12)]
    quick = run(samples, DeadlineParams(startup_s=5.0))[-1]
    slow = run(samples, DeadlineParams(startup_s=90.0))[-1]
    assert slow.expected_rate > quick.expected_rate and slow.replicas > quick.replicas


def test_a_backlog_is_sized_to_be_answered_inside_the_deadline():
    # 480 waiting, nothing arriving any more (the memory saw them all a second ago).
    quiet = PolicyMemory(last_time=-1.0, last_in_system=480.0 + 12.0)
    # 4 s answers: a batch slot for each (480 / 48 = 10) already answers them in time.
    assert plan(LoadSample(0.0, 480.0, 1), quiet, PARAMS).replicas == pytest.approx(10.0)
    # 10 s answers leave 5 s of the 15: 480 * 10 / (48 * 5) = 20 replicas.
    slow = DeadlineParams(deadline_s=15.0, service_s=10.0, batch=48, startup_s=45.0)
    quiet = PolicyMemory(last_time=-1.0, last_in_system=480.0 + 4.8)
    assert plan(LoadSample(0.0, 480.0, 1), quiet, slow).replicas == pytest.approx(20.0)


def test_idle_goes_to_zero_and_a_single_question_asks_for_one():
    idle = run([(t, 0.0, 1) for t in range(0, 300, 5)])[-1]
    assert idle.replicas == 0
    assert 0 < run([(0.0, 1.0, 0)])[0].replicas <= 1


def test_parameters_that_could_never_meet_the_deadline_are_refused():
    with pytest.raises(ValueError, match="service_s must be shorter"):
        DeadlineParams(deadline_s=5.0, service_s=6.0)
    with pytest.raises(ValueError, match="utilisation"):
        DeadlineParams(utilisation=1.5)


def test_serve_runs_it_with_its_memory_in_policy_state_and_its_own_delays():
    policy = _apply_autoscaling_config(DeadlineAwarePolicy(deadline_s=15.0, service_s=4.0, batch=48, startup_s=45.0))
    target, state = policy(context(now=100.0, in_system=400.0, replicas=1, min_replicas=1))
    assert target > 1  # upscale_delay_s 0: at once
    assert state[MEMORY_KEY]["last_in_system"] == 400.0
    # Load gone, but downscale_delay_s is 300 s: Serve's wrapper holds the replicas.
    held, state = policy(context(now=101.0, in_system=0.0, replicas=target, state=state, min_replicas=1))
    assert held == target
    assert state[MEMORY_KEY]["last_time"] == 101.0
