"""Chaos under load: while the emulator sends a steady stream of questions, a generate
replica, the push replica and an ingress replica are killed in turn, and Redis (the shared
state, AOF on) is restarted once. Every user is still answered exactly once.

Its own application on the shared Serve instance: state in a real ``redis-server`` with
appendonly, two ingress replicas and two generate replicas (so each kill leaves one serving
while Serve replaces the dead one), one push replica. Questions are held at generate for as
long as they say: most "#1" (a passive reply inside the first delivery), every fourth "#18"
(past WeChat's last delivery: pushed), so passive and pushed answers are both in flight at
every kill."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from functions.common.clock import SystemClock
from functions.emulator.emulator import UserMessage
from functions.common.job_journal import JobJournal
from functions.common.ledger import KEY_PREFIX as LEDGER_PREFIX
from functions.common.outbox import Outbox
from functions.common.state import open_state_store
from tests.polling import wait_for
from tests.redis_server import RedisServer
from tests.serve.conftest import kill_replica, run_sleepy_app, serve_replicas

pytestmark = pytest.mark.serve

APP = "chaos"
ANSWER = "青禾家居支持7天无理由退货"
MESSAGES = 64
SEND_EVERY_S = 0.5  # 2 messages/s for 32 s
# (what, the deployment whose replica is killed or None for Redis, seconds into the stream)
FAULTS = (("generate replica killed", "generate", 4.0), ("push replica killed", "push", 10.0),
          ("ingress replica killed", "ingress", 16.0), ("redis restarted", None, 22.0))


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("chaos-redis"), appendonly=True) as server:
        yield server


@pytest.fixture(scope="module")
def chaos_service(service, redis, tmp_path_factory):
    yield from run_sleepy_app(service, tmp_path_factory, APP, {"num_replicas": 2, "max_ongoing_requests": 32},
                              app_args={"state_uri": redis.uri, "push_poll_s": 0.2},
                              replicas={"ingress": 2, "push": 1})


def question(index: int) -> str:
    return f"你们的退货政策是什么？{'#18' if index % 4 == 3 else '#1'}"


def send_stream(emulator, users: list[str], outcomes: dict[str, object]) -> threading.Thread:
    """WeChat's side of each message (deliveries, statuses) lands in ``outcomes``."""
    async def send(index: int, user: str) -> None:
        try:
            outcomes[user] = await emulator.send(UserMessage(user=user, text=question(index), wait_for_push_s=0))
        except Exception as exc:  # noqa: BLE001 - kept for the failure message
            outcomes[user] = repr(exc)

    async def stream():
        sends = []
        for index, user in enumerate(users):
            sends.append(asyncio.create_task(send(index, user)))
            await asyncio.sleep(SEND_EVERY_S)
        await asyncio.gather(*sends)

    sender = threading.Thread(target=lambda: asyncio.run(stream()), daemon=True)
    sender.start()
    return sender


def strike(deployment: str | None, redis: RedisServer, rng: random.Random) -> None:
    if deployment is None:
        redis.restart()
        return
    running = [replica for replica in serve_replicas(APP, deployment) if replica["state"] == "RUNNING"]
    kill_replica(rng.choice(running))


def test_every_message_is_answered_exactly_once_through_kills_and_a_redis_restart(chaos_service, redis):
    emulator, rng = chaos_service.emulator, random.Random(7)
    users = [f"o-chaos-{index}" for index in range(MESSAGES)]
    started, outcomes = time.monotonic(), {}
    sender = send_stream(emulator, users, outcomes)
    for fault, deployment, at_s in FAULTS:
        time.sleep(max(0.0, started + at_s - time.monotonic()))
        strike(deployment, redis, rng)
        print(f"chaos: {fault} at {time.monotonic() - started:.1f} s")
    sender.join(timeout=120)

    # Done when every claimed message's journal entry has closed and the outbox is empty: all
    # the state lives in this Redis (which also shows the application really used it).
    store = open_state_store(redis.uri)
    assert store.scan(LEDGER_PREFIX), "the application kept no state in Redis"
    journal, outbox = JobJournal(store, SystemClock(), recheck_s=1), Outbox(store, SystemClock())
    try:
        wait_for(lambda: journal.size() == 0 and outbox.backlog() == 0, 120, "every answer dealt with", 0.5)
    finally:
        api = emulator.api
        counts = [sum(ANSWER in text for text in api.received(user)) for user in users]
        duplicates = sum(count - 1 for count in counts if count > 1)
        lost = sum(count == 0 for count in counts)
        print(f"chaos: sent {MESSAGES}, answered {sum(count > 0 for count in counts)}, duplicates {duplicates}, "
              f"lost {lost}")
    assert (duplicates, lost) == (0, 0), [(user, question(index), outcomes.get(user), api.received(user))
                                          for index, (user, n) in enumerate(zip(users, counts)) if n != 1]
