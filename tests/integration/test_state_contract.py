"""One contract, two real backends: SQLite (embedded) and Redis (a real redis-server)."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest

from functions.common.errors import ConfigurationError
from functions.common.state import open_state_store


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


def test_values_expire(store):
    k = key()
    store.set(k, "v", ttl_s=0.2)
    assert store.get(k) == "v"
    time.sleep(0.35)
    assert store.get(k) is None


def test_set_if_absent_is_exclusive_until_expiry(store):
    k = key()
    assert store.set_if_absent(k, "first", ttl_s=0.3)
    assert not store.set_if_absent(k, "second", ttl_s=0.3)
    assert store.get(k) == "first"
    time.sleep(0.45)
    assert store.set_if_absent(k, "third", ttl_s=30)  # an expired claim is free again
    assert store.get(k) == "third"


def test_compare_and_set(store):
    k = key()
    assert not store.compare_and_set(k, "anything", "x", ttl_s=30)  # absent
    store.set(k, "a", ttl_s=30)
    assert not store.compare_and_set(k, "b", "c", ttl_s=30)
    assert store.get(k) == "a"
    assert store.compare_and_set(k, "a", "c", ttl_s=30)
    assert store.get(k) == "c"
    store.set(k, "short", ttl_s=0.2)
    time.sleep(0.35)
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


def _claim_in_process(uri: str, k: str, name: str, start, results) -> None:
    store = open_state_store(uri)
    start.wait()
    results.put((name, store.set_if_absent(k, name, ttl_s=30)))
    store.close()


def test_one_winner_among_racing_processes(store_uri):
    """Replicas are processes: the claim must hold across them (SQLite via BEGIN IMMEDIATE)."""
    context = multiprocessing.get_context("spawn")
    k, start, results = key(), context.Event(), context.Queue()
    workers = [context.Process(target=_claim_in_process, args=(store_uri, k, f"p{i}", start, results)) for i in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let every process open the store before the race starts
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
