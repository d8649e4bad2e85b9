"""Waiting out a node's drain (functions/generate/scaling/drain.py) on an injected clock."""

from __future__ import annotations

from functions.common.clock import FixedClock
from functions.generate.scaling.drain import wait_until_drained


class Replicas:
    """Replicas left on the node at each look; the last count repeats."""

    def __init__(self, *counts: int):
        self.counts = list(counts)
        self.looks = 0

    def __call__(self) -> int:
        self.looks += 1
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]


def sleeper(clock: FixedClock, slept: list[float]):
    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
    return sleep


def test_the_wait_ends_when_the_last_replica_has_left():
    clock, slept = FixedClock(1000.0), []
    result = wait_until_drained("node-a", Replicas(2, 2, 1, 0), clock, 110, poll_s=1.0, sleep=sleeper(clock, slept))
    assert (result.drained, result.replicas_left, result.waited_s) == (True, 0, 3.0)
    assert slept == [1.0, 1.0, 1.0]


def test_an_empty_node_is_drained_at_once():
    clock, slept = FixedClock(1000.0), []
    replicas = Replicas(0)
    result = wait_until_drained("node-a", replicas, clock, 110, sleep=sleeper(clock, slept))
    assert result.drained and result.waited_s == 0 and slept == [] and replicas.looks == 1


def test_the_deadline_ends_the_wait_with_what_is_left_and_never_overshoots():
    clock, slept = FixedClock(1000.0), []
    result = wait_until_drained("node-a", Replicas(3, 2), clock, 4.5, poll_s=2.0, sleep=sleeper(clock, slept))
    assert (result.drained, result.replicas_left, result.waited_s) == (False, 2, 4.5)
    assert slept == [2.0, 2.0, 0.5]
