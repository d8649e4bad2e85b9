"""One contract, two real backends: SQLite (embedded) and Redis (a real redis-server)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest

from functions.common.clock import FixedClock
from functions.common.errors import ConfigurationError
from functions.common.state import open_state_store
from tests.polling import wait_for


@pytest.fixture(params=["sqlite", "redis"])
def store_uri(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state.db'}"
    return request.getfixturevalue("redis_uri")


@pytest.fixture
def store(store_uri):
    opened = open_state_store(store_uri)
    yield opened
    opened.close()


@pytest.fixture
def expiring(store_uri):
    """(store, ttl_s, expire): short-lived values, and ``expire(key)`` returning once such a key
    has expired. SQLite expires on the injected clock, so no time passes; Redis expires on its
    server's clock, so the test waits for it, with a TTL no pause of a loaded machine outlasts
    between two statements."""
    if store_uri.startswith("sqlite://"):
        clock = FixedClock(1_000_000.0)
        opened, ttl_s = open_state_store(store_uri, clock), 30.0

        def expire(k: str) -> None:
            clock.advance(ttl_s + 1)
    else:
        opened, ttl_s = open_state_store(store_uri), 2.0

        def expire(k: str) -> None:
            wait_for(lambda: opened.get(k) is None, what="the key's expiry")
    yield opened, ttl_s, expire
    opened.close()


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_set_get_delete(store):
    k = key()
    assert store.get(k) is None
    store.set(k, "值 value", ttl_s=30)
    assert store.get(k) == "值 value"
    store.set(k, "new", ttl_s=30)
    assert store.get(k) == "new"
    store.delete(k)
    assert store.get(k) is None


def test_get_many_reads_live_keys_in_one_call(store):
    present = [key() for _ in range(3)]
    for index, k in enumerate(present):
        store.set(k, f"值{index}", ttl_s=30)
    absent = key()
    assert store.get_many([*present, absent]) == {k: f"值{index}" for index, k in enumerate(present)}
    assert store.get_many([]) == {}
    many = [key() for _ in range(1200)]  # more than one SQLite statement holds
    for k in many[::100]:
        store.set(k, "v", ttl_s=30)
    assert set(store.get_many(many)) == set(many[::100])


def test_values_expire(expiring):
    store, ttl_s, expire = expiring
    k, lasting = key(), key()
    store.set(k, "v", ttl_s=ttl_s)
    store.set(lasting, "v", ttl_s=ttl_s * 1000)
    assert store.get(k) == "v"
    expire(k)
    assert store.get(k) is None and store.get(lasting) == "v"


def test_set_if_absent_is_exclusive_until_expiry(expiring):
    store, ttl_s, expire = expiring
    k = key()
    assert store.set_if_absent(k, "first", ttl_s=ttl_s)
    assert not store.set_if_absent(k, "second", ttl_s=ttl_s)
    assert store.get(k) == "first"
    expire(k)
    assert store.set_if_absent(k, "third", ttl_s=ttl_s * 1000)  # an expired claim is free again
    assert store.get(k) == "third"


def test_compare_and_set(expiring):
    store, ttl_s, expire = expiring
    k = key()
    assert not store.compare_and_set(k, "anything", "x", ttl_s=30)  # absent
    store.set(k, "a", ttl_s=30)
    assert not store.compare_and_set(k, "b", "c", ttl_s=30)
    assert store.get(k) == "a"
    assert store.compare_and_set(k, "a", "c", ttl_s=30)
    assert store.get(k) == "c"
    store.set(k, "short", ttl_s=ttl_s)
    expire(k)
    assert not store.compare_and_set(k, "short", "late", ttl_s=30)  # expired values never match


def test_one_winner_among_racing_threads(store):
    k = key()
    barrier = threading.Barrier(16)
    wins = []

    def race(name: str) -> None:
        barrier.wait()
        if store.set_if_absent(k, name, ttl_s=30):
            wins.append(name)

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and store.get(k) == wins[0]


def _claim_in_process(uri: str, k: str, name: str, ready, start, results) -> None:
    store = open_state_store(uri)
    ready.put(name)
    start.wait()
    results.put((name, store.set_if_absent(k, name, ttl_s=30)))
    store.close()


def test_one_winner_among_racing_processes(store_uri):
    """Replicas are processes: the claim must hold across them (SQLite via BEGIN IMMEDIATE)."""
    context = multiprocessing.get_context("spawn")
    k, ready, start, results = key(), context.Queue(), context.Event(), context.Queue()
    workers = [context.Process(target=_claim_in_process, args=(store_uri, k, f"p{i}", ready, start, results))
               for i in range(4)]
    for worker in workers:
        worker.start()
    for _ in workers:  # every process has opened the store: the race starts on one signal
        ready.get(timeout=120)
    start.set()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sum(won for _, won in outcomes) == 1


def test_bad_uris_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="absolute"):
        open_state_store("sqlite://relative/state.db")
    with pytest.raises(ConfigurationError, match="sqlite"):
        open_state_store("memcached://host")


def test_queue_enqueue_is_idempotent_and_lease_hides_items(store):
    queue = key()
    assert store.enqueue(queue, "a", "payload-a", due_s=100.0)
    assert not store.enqueue(queue, "a", "other", due_s=50.0)  # same id: not queued twice
    assert store.enqueue(queue, "b", "payload-b", due_s=200.0)
    assert store.queue_size(queue) == 2
    assert store.lease(queue, now_s=99.0, lease_s=30, limit=10) == []  # nothing due yet
    assert store.lease(queue, now_s=150.0, lease_s=30, limit=10) == [("a", "payload-a")]
    assert store.lease(queue, now_s=160.0, lease_s=30, limit=10) == []  # leased until 180
    assert store.lease(queue, now_s=181.0, lease_s=30, limit=10) == [("a", "payload-a")]  # lease lapsed
    assert store.lease(queue, now_s=250.0, lease_s=30, limit=1) == [("b", "payload-b")]  # earliest due first


def test_queue_reschedule_and_ack(store):
    queue = key()
    store.enqueue(queue, "a", "v1", due_s=0.0)
    store.lease(queue, now_s=1.0, lease_s=30, limit=10)
    store.reschedule(queue, "a", "v2", due_s=5.0)
    assert store.lease(queue, now_s=5.0, lease_s=30, limit=10) == [("a", "v2")]
    store.ack(queue, "a")
    assert store.queue_size(queue) == 0
    assert store.lease(queue, now_s=10_000.0, lease_s=30, limit=10) == []
    assert store.enqueue(queue, "a", "v3", due_s=0.0)  # an acked id may be queued again


def test_racing_workers_never_lease_the_same_item(store):
    queue = key()
    for index in range(40):
        store.enqueue(queue, f"item-{index}", "p", due_s=0.0)
    barrier = threading.Barrier(8)
    taken: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        barrier.wait()
        while batch := store.lease(queue, now_s=1.0, lease_s=60, limit=3):
            with lock:
                taken.extend(item_id for item_id, _ in batch)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(f"item-{index}" for index in range(40))  # each exactly once


def _open_and_write(path: str, name: str, ready, start, results) -> None:
    ready.put(name)
    start.wait()
    try:
        store = open_state_store(f"sqlite://{path}")
        store.set(f"opened:{name}", "yes", ttl_s=30)
        store.close()
        results.put((name, "ok"))
    except Exception as exc:  # reported, not raised: the parent asserts on it
        results.put((name, f"{type(exc).__name__}: {exc}"))


def test_replicas_opening_a_fresh_sqlite_store_together_all_succeed(tmp_path):
    """Replicas start together and race to create the file and switch it to WAL."""
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    path = str(tmp_path / "fresh" / "state.db")
    workers = [context.Process(target=_open_and_write, args=(path, f"r{i}", ready, start, results)) for i in range(12)]
    for worker in workers:
        worker.start()
    for _ in workers:  # every process is up (imports done) before any opens the file
        ready.get(timeout=120)
    start.set()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(outcome == "ok" for _, outcome in outcomes), outcomes


def test_a_token_bucket_empties_then_refills(store):
    k, now = key(), time.time()
    waits = [store.take_token(k, capacity=3, refill_per_s=0.5, now_s=now) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] == pytest.approx(2.0)
    assert store.take_token(k, 3, 0.5, now + 1.0) == pytest.approx(1.0)  # half a token back
    assert store.take_token(k, 3, 0.5, now + 2.0) == 0.0
    assert store.take_token(key(), 3, 0.5, now) == 0.0  # another key, another bucket


def test_a_token_bucket_holds_across_replicas(store_uri):
    """Two replicas (two connections), eight threads each, one bucket of 25: exactly 25 pass."""
    k, now = key(), time.time()
    replicas = [open_state_store(store_uri), open_state_store(store_uri)]
    taken: list[float] = []
    lock = threading.Lock()

    def hammer(replica) -> None:
        for _ in range(10):
            wait = replica.take_token(k, capacity=25, refill_per_s=1e-6, now_s=now)
            with lock:
                taken.append(wait)

    threads = [threading.Thread(target=hammer, args=(replicas[n % 2],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for replica in replicas:
        replica.close()
    assert len(taken) == 160 and taken.count(0.0) == 25


def test_scan_returns_live_keys_under_a_prefix_only(store):
    family = key()
    store.set(f"{family}:a", "1", ttl_s=30)
    store.set(f"{family}:b", "二", ttl_s=30)
    store.set(f"{family}:gone", "x", ttl_s=0.05)
    store.set(f"{family}x", "not under the prefix", ttl_s=30)
    time.sleep(0.2)
    assert store.scan(f"{family}:") == {f"{family}:a": "1", f"{family}:b": "二"}
    assert store.scan(f"{key()}:") == {}
