"""Spot nodes under real Ray Serve: generate placed as deploy/prod.yaml places it, a
preemption notice that drains its node while it holds answers, and a replica lost outright.
Every user is answered exactly once either way.

A spot-labelled Ray node joins the session's on-demand head (tests/serve/conftest.py). The
notice is the drain the spot pods' preStop hook runs (``wxassist drain-node``): Serve starts
generate again on the on-demand head (prod.yaml's fallback) and lets the spot replica finish
what it holds before it stops. A replica that dies instead (its node gone before the drain
ended, or a crash) loses its answers; the ingress asks for them again on a live replica."""

from __future__ import annotations

import asyncio
import threading

import pytest

from functions.emulator.emulator import UserMessage
from tests.polling import wait_for
from tests.serve.conftest import ON_DEMAND, SPOT, kill_replica, run_sleepy_app, serve_replicas

pytestmark = pytest.mark.serve

APP = "drain"
ANSWER = "青禾家居支持7天无理由退货"
HELD_QUESTION = "你们的退货政策是什么？#6"  # held 6 s at generate: past the first delivery's window
USERS_PER_BURST = 4


def generate_placement() -> dict:
    """prod.yaml's generate placement: prefer spot, fall back to on-demand."""
    from serve_app import REPO_DIR, read_serve_config

    _, _, options = read_serve_config(REPO_DIR / "deploy" / "prod.yaml")
    actor = options["generate"]["ray_actor_options"]
    return {"label_selector": actor["label_selector"], "fallback_strategy": actor["fallback_strategy"]}


def generate_replicas() -> list[dict]:
    return serve_replicas(APP, "generate")


def running_on(node_id: str) -> bool:
    replicas = generate_replicas()
    return len(replicas) == 1 and replicas[0]["state"] == "RUNNING" and replicas[0]["node_id"] == node_id


def answers_begun() -> int:
    """Answers the (single) generate replica has begun: ``stats`` counts on arrival."""
    from ray import serve

    return serve.get_deployment_handle("generate", APP).stats.remote().result(timeout_s=10)["answers"]


def start_burst(emulator, users: list[str]) -> threading.Thread:
    async def burst():
        await asyncio.gather(*(emulator.send(UserMessage(user=user, text=HELD_QUESTION, wait_for_push_s=0))
                               for user in users))

    sender = threading.Thread(target=lambda: asyncio.run(burst()), daemon=True)
    sender.start()
    return sender


def assert_answered_once_each(api, users: list[str]) -> None:
    wait_for(lambda: all(any(ANSWER in text for text in api.received(user)) for user in users), 60,
             "every user's answer", 0.5)
    for user in users:
        received = api.received(user)
        assert sum(ANSWER in text for text in received) == 1, (user, received)


@pytest.fixture(scope="module")
def spot_node(ray_cluster):
    node = ray_cluster.add_node(num_cpus=2, labels=SPOT)
    ray_cluster.wait_for_nodes()
    yield node
    if node in ray_cluster.worker_nodes:
        ray_cluster.remove_node(node)


@pytest.fixture(scope="module")
def drain_service(service, spot_node, tmp_path_factory):
    yield from run_sleepy_app(service, tmp_path_factory, APP, {
        "num_replicas": 1, "max_ongoing_requests": 8, "graceful_shutdown_timeout_s": 60,
        "ray_actor_options": generate_placement()},
        cpu_steps_actor_options={"label_selector": ON_DEMAND})  # as prod keeps them on its CPU pool


def test_a_preemption_notice_moves_generate_off_spot_and_its_answers_finish(ray_cluster, spot_node, drain_service):
    from functions.generate.scaling.drain import drain_node

    assert running_on(spot_node.node_id), generate_replicas()  # spot preferred while there is spot
    users = [f"o-drain-{index}" for index in range(USERS_PER_BURST)]
    sender = start_burst(drain_service.emulator, users)
    wait_for(lambda: answers_begun() >= USERS_PER_BURST, 30, "the burst at generate", 0.2)

    result = drain_node(spot_node.node_id, 60, reason_message="test: spot interruption notice", poll_s=0.5)

    assert result.drained, result
    head = ray_cluster.head_node.node_id
    assert running_on(head), generate_replicas()  # on-demand, by the fallback strategy
    assert_answered_once_each(drain_service.emulator.api, users)
    # The spot replica finished them: its replacement was never asked for any.
    assert answers_begun() == 0
    sender.join(timeout=30)
    ray_cluster.remove_node(spot_node)  # the node goes, as the cloud takes it at the deadline


def test_answers_lost_with_their_replica_are_generated_again_on_a_live_one(drain_service):
    (replica,) = generate_replicas()
    users = [f"o-lost-{index}" for index in range(USERS_PER_BURST)]
    sender = start_burst(drain_service.emulator, users)
    wait_for(lambda: answers_begun() >= USERS_PER_BURST, 30, "the burst at generate", 0.2)

    kill_replica(replica)

    assert_answered_once_each(drain_service.emulator.api, users)
    (replacement,) = generate_replicas()
    assert replacement["replica_id"] != replica["replica_id"]
    assert answers_begun() == USERS_PER_BURST  # each lost answer asked for again, once
    sender.join(timeout=30)
