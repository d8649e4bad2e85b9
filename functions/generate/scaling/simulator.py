"""A trace-driven model of generate's replicas, for comparing autoscaling policies before
money is spent on GPUs.

The cluster's own service and start-up times (``ClusterModel``) are the truth the run plays out;
a policy's parameters are its beliefs about them, and need not match (the sensitivity runs
make them differ on purpose).

Time advances in steps of ``step_s``. Each step:
- messages arrive from the trace;
- replicas finish answers (up to ``batch`` at a time each, ``service_s`` mean);
- spot replicas may get a preemption notice, and then drain: they take no new work, finish
  what they hold, and leave when the notice runs out; anything unfinished is handed back to
  the queue (the outbox), never dropped;
- the policy sees what Serve would show it (requests in the system averaged over its
  look-back window, the replica count) and sets a target; new replicas are ready only after
  ``startup_s``; replicas scaled away drain the same way;
- queued messages go to the least-loaded ready replica.

What is paid follows the stack (``stack_prices``): its ``on_demand_base`` on-demand GPU nodes
run, and are paid, all the time, whether or not a replica is on them; replicas fill them
first, and every replica past them runs on a spot node paid from the moment the replica is
requested until it leaves. GPU-hours are these paid node-hours. A message is *passive* when its answer is ready
inside WeChat's first delivery window, and *within 15 s* when it is ready before WeChat's
third delivery gives up (after that it is pushed). *Lost* counts messages never answered by
the end of the run, which includes a drain period after the trace ends.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class ClusterModel:
    on_demand_usd_h: float  # per GPU node; from infra/instances.yaml (stack_prices), never a literal here
    spot_usd_h: float
    on_demand_base: int = 0  # on-demand GPU nodes, paid all the time; replicas past them run on spot
    service_s: float = 4.0  # the real mean generation time per answer at a full batch
    batch: int = 48
    startup_s: float = 45.0  # the real time from a replica's request to its first answer
    min_replicas: int = 1
    max_replicas: int = 8
    spot_preemptions_per_hour: float = 0.1  # per spot replica
    preemption_notice_s: float = 120.0
    passive_window_s: float = 4.5  # an answer later than this misses the first delivery
    deadline_s: float = 15.0
    step_s: float = 1.0
    drain_after_s: float = 1800.0  # how long past the trace's end to wait for answers
    seed: int = 0


class Policy(Protocol):
    name: str
    look_back_s: float

    def target(self, now: float, in_system: float, arrivals_window: float, current: int, target: int) -> int: ...


@dataclass
class Replica:
    market: str  # "on-demand" or "spot"
    ready_at: float
    leave_at: float | None = None  # set when draining (scaled away or preempted)
    in_flight: list[tuple[float, int]] = field(default_factory=list)  # heap of (finish, message)

    def ready(self, now: float) -> bool:
        return now >= self.ready_at and self.leave_at is None


@dataclass(frozen=True)
class PolicyResult:
    gpu_hours: float
    cost: float
    passive_share: float
    within_15s: float
    lost: int
    answered: int
    p99_s: float
    peak_replicas: int
    timeline: list[tuple[float, float, int]]  # (time, arrivals/s over the last minute, replicas)
    setting: str = ""  # the policy's tuned knob, as the report shows it ("3 replicas", "target 16")

    def summary(self) -> dict:
        return {"gpu_hours": round(self.gpu_hours, 3), "cost": round(self.cost, 2),
                "passive_share": round(self.passive_share, 4), "within_15s": round(self.within_15s, 4),
                "lost": self.lost}


@functools.lru_cache(maxsize=64)
def _answer_times(seed: int, count: int, service_s: float) -> tuple[tuple[float, ...], tuple]:
    """Every message's answer time, and the random source's state after drawing them: the same
    for every policy run on one seed (drawn once, a fifth of a run's time)."""
    rng = random.Random(seed)
    service = tuple(max(0.2, rng.lognormvariate(math.log(service_s) - 0.045, 0.3)) for _ in range(count))
    return service, rng.getstate()


def simulate(arrivals: list[float], policy: Policy, model: ClusterModel) -> PolicyResult:
    service, state = _answer_times(model.seed, len(arrivals), model.service_s)
    rng = random.Random()
    rng.setstate(state)  # preemptions draw from where the answer times left off
    latency: list[float | None] = [None] * len(arrivals)
    queue: deque[int] = deque()
    replicas: list[Replica] = []
    history: deque[tuple[float, float]] = deque()  # (time, in_system) inside the look-back window
    recent_arrivals: deque[float] = deque()  # arrival times in the last minute
    usd = gpu_seconds = 0.0
    target = model.min_replicas
    timeline: list[tuple[float, float, int]] = []
    peak = 0
    next_arrival = 0
    end = (arrivals[-1] if arrivals else 0.0) + model.drain_after_s
    preempt_chance = model.spot_preemptions_per_hour * model.step_s / 3600.0

    def start_replica(now: float) -> None:
        on_demand = sum(1 for r in replicas if r.market == "on-demand")
        market = "on-demand" if on_demand < model.on_demand_base else "spot"
        replicas.append(Replica(market, ready_at=now + model.startup_s))

    for _ in range(model.min_replicas):
        start_replica(-model.startup_s)  # warm at the start, as a running deployment would be

    now = 0.0
    while now < end:
        step_end = now + model.step_s
        while next_arrival < len(arrivals) and arrivals[next_arrival] < step_end:
            queue.append(next_arrival)
            recent_arrivals.append(arrivals[next_arrival])
            next_arrival += 1
        while recent_arrivals and recent_arrivals[0] < step_end - 60.0:
            recent_arrivals.popleft()

        for replica in replicas:
            while replica.in_flight and replica.in_flight[0][0] <= step_end:
                finish, message = heapq.heappop(replica.in_flight)
                latency[message] = finish - arrivals[message]
            if replica.market == "spot" and replica.leave_at is None and rng.random() < preempt_chance:
                replica.leave_at = now + model.preemption_notice_s
        leaving = [r for r in replicas if r.leave_at is not None and r.leave_at <= step_end]
        for replica in leaving:
            for _, message in sorted(replica.in_flight):
                queue.appendleft(message)  # handed back: answered elsewhere, not lost
            replicas.remove(replica)

        in_system = len(queue) + sum(len(r.in_flight) for r in replicas)
        history.append((now, in_system))
        while history and history[0][0] < now - policy.look_back_s:
            history.popleft()
        averaged = sum(value for _, value in history) / len(history)
        active = [r for r in replicas if r.leave_at is None]
        running = sum(1 for r in active if r.ready_at <= now)
        target = policy.target(now, averaged, len(recent_arrivals) / 60.0, running, target)
        target = max(model.min_replicas, min(model.max_replicas, target))
        # Replacements for drained or preempted replicas start as soon as they are short.
        for _ in range(target - len(active)):
            start_replica(now)
        if len(active) > target:
            # Serve stops the replicas that are not ready yet first, then the least loaded; the
            # on-demand base goes last (its nodes stay paid for either way).
            surplus = sorted(active, key=lambda r: (r.ready_at <= now, r.market == "on-demand",
                                                    len(r.in_flight)))[:len(active) - target]
            for replica in surplus:
                if replica.ready_at > now:
                    replicas.remove(replica)
                else:
                    replica.leave_at = max((finish for finish, _ in replica.in_flight), default=now)

        ready = [r for r in replicas if r.ready(now)]
        while queue and ready:
            replica = min(ready, key=lambda r: len(r.in_flight))
            if len(replica.in_flight) >= model.batch:
                break
            message = queue.popleft()
            start = max(now, arrivals[message])
            heapq.heappush(replica.in_flight, (start + service[message], message))

        spot = sum(1 for r in replicas if r.market == "spot")
        usd += (model.on_demand_base * model.on_demand_usd_h + spot * model.spot_usd_h) * model.step_s / 3600.0
        gpu_seconds += (model.on_demand_base + spot) * model.step_s
        peak = max(peak, len(replicas))
        if int(now) % 10 == 0:
            timeline.append((now, len(recent_arrivals) / 60.0, len(replicas)))
        if next_arrival >= len(arrivals) and not queue and not any(r.in_flight for r in replicas) \
                and now >= (arrivals[-1] if arrivals else 0.0) + 60.0:
            break
        now = step_end

    answered = [value for value in latency if value is not None]
    total = max(1, len(arrivals))
    answered.sort()
    return PolicyResult(
        gpu_hours=gpu_seconds / 3600.0, cost=usd,
        passive_share=sum(1 for value in answered if value <= model.passive_window_s) / total,
        within_15s=sum(1 for value in answered if value <= model.deadline_s) / total,
        lost=len(arrivals) - len(answered), answered=len(answered),
        p99_s=answered[min(len(answered) - 1, int(0.99 * len(answered)))] if answered else math.inf,
        peak_replicas=peak, timeline=timeline)
