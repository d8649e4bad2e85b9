"""The deadline-aware autoscaling policy for generate.

Ray's default policy scales on ongoing requests per replica. That number says nothing about
time, and time is what WeChat counts: an answer must be back inside the deadline (15 s covers
WeChat's three deliveries, after which it must be pushed). This policy asks a different
question: with the replicas we have, and the ones we would start now (ready only after
``startup_s``), how long will the newest message wait, and does that fit the deadline?

Inputs are what Serve's ``AutoscalingContext`` gives: requests in the system (running and
queued) and the replica count, at each control-loop tick. The arrival rate is not given, so it
is estimated: what arrived = the change in requests in the system + what the replicas
finished, smoothed. A burst shows as a rising rate; the policy plans for the load expected
when new replicas will be ready (rate trend × start-up time), so it starts them at the first
sign of a burst instead of after a queue has built up. Scaling down is left to Serve's
``downscale_delay_s`` (slow), and to zero to ``downscale_to_zero_delay_s`` (test stacks).

The core (``plan``) is pure: a sample and the previous memory in, replicas and memory out.
``DeadlineAwarePolicy`` adapts it to Serve's class-callable policy API.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

MEMORY_KEY = "deadline_aware"  # our part of Serve's policy_state


@dataclass(frozen=True)
class DeadlineParams:
    deadline_s: float = 15.0  # every answer inside this; WeChat's three deliveries span ~15 s
    service_s: float = 4.0  # one answer's generation time at a full batch (mean)
    batch: int = 48  # answers a replica generates at once (max_ongoing_requests)
    startup_s: float = 45.0  # a new replica's time to ready: schedule, restore, load
    utilisation: float = 0.8  # plan replicas to run at this share of their capacity
    rate_halflife_s: float = 10.0  # smoothing of the arrival-rate estimate
    trend_halflife_s: float = 10.0  # smoothing of its trend (the burst detector)
    idle_rate: float = 0.01  # arrivals/s below which, with nothing in flight, no replica is needed

    def __post_init__(self):
        if self.service_s >= self.deadline_s:
            raise ValueError("service_s must be shorter than deadline_s: no replica count could meet it")
        if not 0 < self.utilisation <= 1:
            raise ValueError("utilisation must be in (0, 1]")

    @property
    def replica_rate(self) -> float:
        """Answers per second one replica sustains at the planned utilisation."""
        return self.batch * self.utilisation / self.service_s


@dataclass(frozen=True)
class LoadSample:
    now: float  # seconds, any monotonic origin
    in_system: float  # requests running or queued at generate
    replicas: int  # replicas running now


@dataclass
class PolicyMemory:
    last_time: float | None = None
    last_in_system: float = 0.0
    rate: float = 0.0  # arrivals/s, smoothed
    trend: float = 0.0  # d(rate)/dt, smoothed; > 0 in a burst

    def to_state(self) -> dict:
        return dict(vars(self))  # flat floats: asdict's deep copy costs a third of a simulation

    @classmethod
    def from_state(cls, state: dict | None) -> PolicyMemory:
        return cls(**state) if state else cls()


@dataclass(frozen=True)
class Decision:
    replicas: float  # Serve rounds, bounds and delays this
    rate: float
    expected_rate: float  # at the time a replica started now is ready
    memory: PolicyMemory = field(compare=False)


def _smooth(previous: float, value: float, elapsed: float, halflife: float) -> float:
    weight = 1.0 - 0.5 ** (elapsed / halflife) if halflife > 0 else 1.0
    return previous + weight * (value - previous)


def completion_rate(in_system: float, replicas: int, params: DeadlineParams) -> float:
    """Answers per second the replicas finish: each runs up to ``batch`` at a time."""
    running = min(in_system, replicas * params.batch)
    return running / params.service_s


def plan(sample: LoadSample, memory: PolicyMemory, params: DeadlineParams) -> Decision:
    memory = copy.copy(memory)  # the caller's memory stays as it was (dataclasses.replace is 10x slower)
    if memory.last_time is not None and sample.now > memory.last_time:
        elapsed = sample.now - memory.last_time
        finished = completion_rate(memory.last_in_system, sample.replicas, params) * elapsed
        arrived = max(0.0, sample.in_system - memory.last_in_system + finished)
        previous_rate = memory.rate
        memory.rate = _smooth(memory.rate, arrived / elapsed, elapsed, params.rate_halflife_s)
        memory.trend = _smooth(memory.trend, (memory.rate - previous_rate) / elapsed, elapsed,
                               params.trend_halflife_s)
    elif memory.last_time is None:
        memory.rate = sample.in_system / params.service_s  # first look: assume a steady state
    memory.last_time, memory.last_in_system = sample.now, sample.in_system

    # The load a replica started now will meet: the rate then, and the backlog built until then
    # by whatever the current replicas cannot take.
    expected_rate = max(memory.rate, memory.rate + max(0.0, memory.trend) * params.startup_s)
    capacity_now = sample.replicas * params.batch / params.service_s
    backlog_then = sample.in_system + max(0.0, (memory.rate + expected_rate) / 2 - capacity_now) * params.startup_s
    # Enough replicas to keep up with arrivals, and to answer the backlog inside the deadline
    # (generation itself takes service_s of it).
    for_rate = expected_rate / params.replica_rate
    budget = params.deadline_s - params.service_s
    for_backlog = backlog_then * params.service_s / (params.batch * budget) if backlog_then else 0.0
    for_in_flight = sample.in_system / params.batch  # every request needs a batch slot
    replicas = max(for_rate, for_backlog, for_in_flight)
    if sample.in_system <= 0 and expected_rate < params.idle_rate:
        replicas = 0.0
    return Decision(replicas, memory.rate, expected_rate, memory)


class DeadlineAwarePolicy:
    """Serve's class-callable policy (``autoscaling_config.policy.policy_function``), built
    with ``policy_kwargs`` = ``DeadlineParams`` fields. Serve applies min/max replicas,
    ``upscale_delay_s`` (0: a burst scales at once) and ``downscale_delay_s`` around it."""

    def __init__(self, **params):
        self.params = DeadlineParams(**params)

    def __call__(self, ctx) -> tuple[float, dict]:
        state = dict(ctx.policy_state or {})
        now = ctx.current_time if ctx.current_time is not None else time.time()
        decision = plan(LoadSample(now, float(ctx.total_num_requests), int(ctx.current_num_replicas)),
                        PolicyMemory.from_state(state.get(MEMORY_KEY)), self.params)
        state[MEMORY_KEY] = decision.memory.to_state()
        return decision.replicas, state
