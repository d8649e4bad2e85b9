"""The deadline-aware policy driving real Serve autoscaling on CPU: a held burst scales
generate up, and when it has been answered generate scales back down, with every user
answered exactly once throughout (replicas stopping on the way down drain, they do not drop).

Its own application on the shared Serve instance; generate takes 2 answers at a time, each
held for as long as the question says ("#15": 15 s), and the policy is told a replica
answers in 2 s and starts in 1 s: ten held questions need every replica it may have."""

from __future__ import annotations

import asyncio
import threading

import pytest

from functions.emulator.emulator import UserMessage
from tests.polling import wait_for
from tests.serve.conftest import run_sleepy_app

pytestmark = pytest.mark.serve

ANSWER = "青禾家居支持7天无理由退货"
APP = "scaling"
MAX_REPLICAS = 3
GENERATE_SCALING = {
    "min_replicas": 1, "max_replicas": MAX_REPLICAS, "upscale_delay_s": 0, "downscale_delay_s": 3,
    "look_back_period_s": 2, "metrics_interval_s": 0.5,
    "policy": {"policy_function": "functions.generate.scaling.policy:DeadlineAwarePolicy",
               "policy_kwargs": {"deadline_s": 6.0, "service_s": 2.0, "batch": 2, "startup_s": 1.0}},
}


def running_generate_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications[APP].deployments["generate"]
    return deployment.replica_states.get("RUNNING", 0)


@pytest.fixture(scope="module")
def scaling_service(service, tmp_path_factory):
    yield from run_sleepy_app(service, tmp_path_factory, APP, {
        "max_ongoing_requests": 2, "max_queued_requests": -1, "graceful_shutdown_timeout_s": 60,
        "autoscaling_config": GENERATE_SCALING})


def test_a_held_burst_scales_generate_up_then_back_down_answering_everyone_once(scaling_service):
    emulator = scaling_service.emulator
    users = [f"o-scale-{index}" for index in range(10)]
    assert running_generate_replicas() == 1

    async def burst():
        await asyncio.gather(*(
            emulator.send(UserMessage(user=user, text="你们的退货政策是什么？#15", wait_for_push_s=0))
            for user in users))

    sender = threading.Thread(target=lambda: asyncio.run(burst()), daemon=True)
    sender.start()
    # Ten answers held 15 s each, two at a time per replica: the predicted wait is far past
    # the 6 s deadline, so the policy asks for every replica it may have.
    wait_for(lambda: running_generate_replicas() == MAX_REPLICAS, 60, f"{MAX_REPLICAS} generate replicas", 0.5)

    api = emulator.api
    wait_for(lambda: all(any(ANSWER in text for text in api.received(user)) for user in users), 150,
             "every user's answer", 0.5)
    # Nothing in flight: after downscale_delay_s the policy lets the extra replicas go.
    wait_for(lambda: running_generate_replicas() == 1, 90, "generate back at 1 replica", 0.5)
    sender.join(timeout=30)
    for user in users:
        received = api.received(user)
        assert sum(ANSWER in text for text in received) == 1, (user, received)
