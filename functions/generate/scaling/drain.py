"""A spot node's preemption notice, turned into a drain that loses no answer.

Ray is told the node goes away at a deadline (``DRAIN_NODE_REASON_PREEMPTION``, the call
Ray's own autoscaler makes). Serve then starts each of the node's replicas again elsewhere
(generate's ``fallback_strategy`` is the on-demand group) and, once the replacement runs,
stops the old replica gracefully: it takes no new requests and finishes the ones it holds,
for up to ``graceful_shutdown_timeout_s``. ``drain_node`` waits until no Serve replica is
left on the node, or the deadline, whichever is first.

Spot GPU pods run it as their preStop hook (``wxassist drain-node``, wired in
infra/components/ray_service.py): on EKS an interruption notice cordons and drains the
Kubernetes node, and the hook holds the pod until its replicas have left. An answer still
lost with its node (the deadline came first) is asked for again on a live replica by the
ingress, so the user is answered either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from functions.common.clock import Clock, SystemClock
from functions.common.errors import WxAssistError

SERVE_DETAILS_TIMEOUT_S = 10.0
DEFAULT_DEADLINE_S = 110  # the pod's terminationGracePeriodSeconds (120) less a margin to exit


class DrainRefused(WxAssistError):
    """Ray's control service would not drain the node (unknown node, or not a worker)."""


@dataclass(frozen=True)
class DrainResult:
    node_id: str
    drained: bool  # no Serve replica is left on the node
    replicas_left: int
    waited_s: float


def wait_until_drained(node_id: str, replicas_on_node: Callable[[], int], clock: Clock, deadline_s: float,
                       *, poll_s: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> DrainResult:
    """Poll until the node holds no replica, or ``deadline_s`` has passed on ``clock``."""
    started_s = clock.now_s()
    while True:
        left = replicas_on_node()
        waited_s = clock.now_s() - started_s
        if left == 0 or waited_s >= deadline_s:
            return DrainResult(node_id, left == 0, left, round(waited_s, 3))
        sleep(min(poll_s, deadline_s - waited_s))


def request_drain(node_id: str, deadline_s: float, reason_message: str, clock: Clock) -> None:
    """Tell Ray the node is preempted at ``now + deadline_s``; Serve reacts to the mark."""
    import ray
    from ray.core.generated import autoscaler_pb2

    gcs = ray._raylet.GcsClient(address=ray.get_runtime_context().gcs_address)
    deadline_ms = int((clock.now_s() + deadline_s) * 1000)
    accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                   reason_message, deadline_ms)
    if not accepted:
        raise DrainRefused(f"Ray refused to drain node {node_id}: {why}")


def serve_replicas_on(node_id: str) -> int:
    """Serve replicas of any application still on the node, in any state short of gone."""
    from ray.serve.context import _get_global_client  # the controller's details: where each replica runs

    import ray

    try:
        client = _get_global_client(raise_if_no_controller_running=False)
        if client is None:  # Serve is not running: nothing of ours to drain
            return 0
        details = ray.get(client._controller.get_serve_instance_details.remote(), timeout=SERVE_DETAILS_TIMEOUT_S)
    except (ray.exceptions.RayError, ConnectionError) as exc:
        # The head is going too (an upgrade, the cluster deleted): no replica can move, so
        # waiting out the deadline would only hold the pod.
        raise DrainRefused(f"Serve's controller does not answer: {type(exc).__name__}") from exc
    return sum(replica.get("node_id") == node_id
               for application in details.get("applications", {}).values()
               for deployment in application.get("deployments", {}).values()
               for replica in deployment.get("replicas", []))


def drain_node(node_id: str | None = None, deadline_s: float = DEFAULT_DEADLINE_S, *,
               reason_message: str = "spot interruption notice", clock: Clock | None = None,
               poll_s: float = 1.0) -> DrainResult:
    """Drain ``node_id`` (default: the node this process runs on) on a connected Ray."""
    import ray

    clock = clock or SystemClock()
    node_id = node_id or ray.get_runtime_context().get_node_id()
    request_drain(node_id, deadline_s, reason_message, clock)
    return wait_until_drained(node_id, lambda: serve_replicas_on(node_id), clock, deadline_s, poll_s=poll_s)
