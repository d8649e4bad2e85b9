"""Shared state behind one small interface, with two real backends.

* ``sqlite:///path/state.db`` (embedded default): WAL mode, ``BEGIN IMMEDIATE`` for every
  read-modify-write, so replicas in several processes on one machine agree.
* ``redis://host:port/db`` (scale-out): ``SET NX PX`` for claims, a Lua script for
  compare-and-set, server-side expiry.

Values are strings (callers store JSON); every key has a time to live. The claim ledger and
the access-token cache are built on the five key operations, the outbox on the queue ones,
rate limits on ``take_token`` (a token bucket updated atomically in one step).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlparse

from functions.common.clock import Clock, SystemClock
from functions.common.errors import ConfigurationError, StateContention


class StateStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """The live values among ``keys``, in one round trip (absent keys are left out): how
        every delivery waiting on a replica looks at the ledger at once."""
        ...

    def set(self, key: str, value: str, ttl_s: float) -> None: ...

    def set_if_absent(self, key: str, value: str, ttl_s: float) -> bool:
        """Atomically store ``value`` unless the key holds a live value; True if stored."""
        ...

    def compare_and_set(self, key: str, expected: str, value: str, ttl_s: float) -> bool:
        """Atomically replace the value only if it is still ``expected``; True if replaced."""
        ...

    def delete(self, key: str) -> None: ...

    def scan(self, prefix: str) -> dict[str, str]:
        """Every live key starting with ``prefix``, with its value (small key families only:
        the replicas' metric snapshots)."""
        ...

    def take_token(self, key: str, capacity: float, refill_per_s: float, now_s: float) -> float:
        """Atomically take one token from the bucket at ``key`` (full when new): 0.0 if one was
        taken, otherwise the seconds until one will be there."""
        ...

    # Durable queues (the outbox). An item is due at a time; leasing a due item moves its due
    # time past the lease, so a worker that dies holding it simply lets it come due again.
    def enqueue(self, queue: str, item_id: str, payload: str, due_s: float) -> bool:
        """Add an item unless one with this id is queued; True if added."""
        ...

    def lease(self, queue: str, now_s: float, lease_s: float, limit: int) -> list[tuple[str, str]]:
        """Atomically take up to ``limit`` items due by ``now_s``: (item_id, payload) pairs."""
        ...

    def reschedule(self, queue: str, item_id: str, payload: str, due_s: float) -> None: ...

    def ack(self, queue: str, item_id: str) -> None: ...

    def queue_size(self, queue: str) -> int: ...

    def close(self) -> None: ...


def user_digest(user: str) -> str:
    """What keys hold instead of a user's openid: the store is shared infrastructure."""
    return hashlib.sha256(user.encode("utf-8")).hexdigest()[:32]


UPDATE_ATTEMPTS = 20  # each lost compare-and-set means another replica just wrote the key
SQLITE_BATCH = 500  # keys per statement: below SQLite's parameter limit on every build


def update_value(store: StateStore, key: str, change: Callable[[str | None], str | None], ttl_s: float) -> None:
    """Read-modify-write ``key`` by compare-and-set, retried while other writers win the race.
    ``change`` maps the current value (None: absent) to the new one (None: leave it as is)."""
    for _ in range(UPDATE_ATTEMPTS):
        raw = store.get(key)
        value = change(raw)
        if value is None or value == raw:
            return
        if store.set_if_absent(key, value, ttl_s) if raw is None else store.compare_and_set(key, raw, value, ttl_s):
            return
    raise StateContention(f"a shared record kept changing; gave up after {UPDATE_ATTEMPTS} attempts")


def open_state_store(uri: str, clock: Clock | None = None) -> StateStore:
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        path = uri[len("sqlite://") :]
        if not path.startswith("/"):
            raise ConfigurationError("a SQLite state URI needs an absolute path: sqlite:///abs/path/state.db")
        return SQLiteStateStore(Path(path), clock)
    if scheme in ("redis", "rediss"):
        return RedisStateStore(uri)
    raise ConfigurationError(f"state store URI must be sqlite:///… or redis://…, not {scheme or uri[:20]!r}")


class SQLiteStateStore:
    """Expiry is checked against the injected clock on every read; expired rows are purged
    lazily by the writes that meet them."""

    def __init__(self, path: Path, clock: Clock | None = None, busy_timeout_s: float = 5.0):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()  # one connection, shared by a replica's threads
        self._db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._initialise(busy_timeout_s)

    def _initialise(self, busy_timeout_s: float) -> None:
        """Switch to WAL and create the tables. Replicas starting together race for a fresh
        file, and switching journal modes fails at once with "database is locked" instead of
        waiting on the busy timeout: retry until it passes."""
        deadline_s = time.monotonic() + busy_timeout_s * 2
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"
                )
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS queue (queue TEXT NOT NULL, item_id TEXT NOT NULL, payload TEXT NOT NULL,"
                    " due_at REAL NOT NULL, PRIMARY KEY (queue, item_id))"
                )
                self._db.execute("CREATE INDEX IF NOT EXISTS queue_due ON queue (queue, due_at)")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline_s:
                    raise
                time.sleep(0.05)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE key = ? AND expires_at > ?", (key, self._clock.now_s())
            ).fetchone()
        return row[0] if row else None

    def get_many(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            now_s = self._clock.now_s()
            for start in range(0, len(keys), SQLITE_BATCH):  # SQLite caps a statement's parameters
                batch = keys[start : start + SQLITE_BATCH]
                marks = ",".join("?" * len(batch))
                found.update(self._db.execute(
                    f"SELECT key, value FROM state WHERE key IN ({marks}) AND expires_at > ?", (*batch, now_s)
                ).fetchall())
        return found

    def set(self, key: str, value: str, ttl_s: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO state (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, self._clock.now_s() + ttl_s),
            )

    def set_if_absent(self, key: str, value: str, ttl_s: float) -> bool:
        now_s = self._clock.now_s()
        with self._lock, self._immediate():
            self._db.execute("DELETE FROM state WHERE key = ? AND expires_at <= ?", (key, now_s))
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO state (key, value, expires_at) VALUES (?, ?, ?)", (key, value, now_s + ttl_s)
            )
            return cursor.rowcount == 1

    def compare_and_set(self, key: str, expected: str, value: str, ttl_s: float) -> bool:
        now_s = self._clock.now_s()
        with self._lock, self._immediate():
            cursor = self._db.execute(
                "UPDATE state SET value = ?, expires_at = ? WHERE key = ? AND value = ? AND expires_at > ?",
                (value, now_s + ttl_s, key, expected, now_s),
            )
            return cursor.rowcount == 1

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM state WHERE key = ?", (key,))

    def scan(self, prefix: str) -> dict[str, str]:
        with self._lock:  # a range on the primary key: prefix <= key < prefix + U+10FFFF
            rows = self._db.execute(
                "SELECT key, value FROM state WHERE key >= ? AND key < ? AND expires_at > ?",
                (prefix, prefix + "\U0010ffff", self._clock.now_s()),
            ).fetchall()
        return dict(rows)

    def take_token(self, key: str, capacity: float, refill_per_s: float, now_s: float) -> float:
        with self._lock, self._immediate():
            row = self._db.execute("SELECT value FROM state WHERE key = ? AND expires_at > ?", (key, now_s)).fetchone()
            tokens, updated_s = (capacity, now_s) if row is None else map(float, row[0].split(","))
            tokens, updated_s, wait_s = _take(tokens, updated_s, capacity, refill_per_s, now_s)
            self._db.execute(
                "INSERT OR REPLACE INTO state (key, value, expires_at) VALUES (?, ?, ?)",
                (key, f"{tokens!r},{updated_s!r}", now_s + _bucket_ttl_s(capacity, refill_per_s)),
            )
            return wait_s

    def enqueue(self, queue: str, item_id: str, payload: str, due_s: float) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO queue (queue, item_id, payload, due_at) VALUES (?, ?, ?, ?)",
                (queue, item_id, payload, due_s),
            )
            return cursor.rowcount == 1

    def lease(self, queue: str, now_s: float, lease_s: float, limit: int) -> list[tuple[str, str]]:
        with self._lock, self._immediate():
            rows = self._db.execute(
                "SELECT item_id, payload FROM queue WHERE queue = ? AND due_at <= ? ORDER BY due_at LIMIT ?",
                (queue, now_s, limit),
            ).fetchall()
            self._db.executemany(
                "UPDATE queue SET due_at = ? WHERE queue = ? AND item_id = ?",
                [(now_s + lease_s, queue, item_id) for item_id, _ in rows],
            )
        return [(item_id, payload) for item_id, payload in rows]

    def reschedule(self, queue: str, item_id: str, payload: str, due_s: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE queue SET payload = ?, due_at = ? WHERE queue = ? AND item_id = ?", (payload, due_s, queue, item_id)
            )

    def ack(self, queue: str, item_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE queue = ? AND item_id = ?", (queue, item_id))

    def queue_size(self, queue: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM queue WHERE queue = ?", (queue,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _immediate(self):
        """A write transaction taken up front, so two processes cannot both read 'absent'."""
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


# Replace only if unchanged, keeping the new time to live: one round trip, atomic in Redis.
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


# The token bucket, as _take below: "tokens,updated" refilled to now, one taken if there.
# Returned as a string: Redis turns Lua numbers into integers.
_TAKE_TOKEN = """
local capacity, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, updated = capacity, now
local raw = redis.call('GET', KEYS[1])
if raw then
  local sep = string.find(raw, ',', 1, true)
  tokens, updated = tonumber(string.sub(raw, 1, sep - 1)), tonumber(string.sub(raw, sep + 1))
end
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
updated = math.max(now, updated)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('SET', KEYS[1], string.format('%.17g,%.17g', tokens, updated), 'PX', ARGV[4])
return string.format('%.17g', wait)
"""


def _take(tokens: float, updated_s: float, capacity: float, refill_per_s: float, now_s: float) -> tuple[float, float, float]:
    """(tokens left, updated at, seconds to wait): a replica whose clock is behind refills nothing."""
    tokens = min(capacity, tokens + max(0.0, now_s - updated_s) * refill_per_s)
    if tokens >= 1:
        return tokens - 1, max(now_s, updated_s), 0.0
    return tokens, max(now_s, updated_s), (1 - tokens) / refill_per_s


def _bucket_ttl_s(capacity: float, refill_per_s: float) -> float:
    """A bucket left alone this long is full again: it need not be kept."""
    return capacity / refill_per_s + 60.0


# A queue is a sorted set of item ids by due time plus a hash of payloads.
_ENQUEUE = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""
_LEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local taken = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  table.insert(taken, id)
  table.insert(taken, redis.call('HGET', KEYS[2], id))
end
return taken
"""


class RedisStateStore:
    def __init__(self, uri: str):
        import redis

        self._redis = redis.Redis.from_url(uri, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        self._compare_and_set = self._redis.register_script(_COMPARE_AND_SET)
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._lease = self._redis.register_script(_LEASE)
        self._take_token = self._redis.register_script(_TAKE_TOKEN)

    def get(self, key: str) -> str | None:
        return self._redis.get(key)

    def get_many(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        return {key: value for key, value in zip(keys, self._redis.mget(keys)) if value is not None}

    def set(self, key: str, value: str, ttl_s: float) -> None:
        self._redis.set(key, value, px=_ms(ttl_s))

    def set_if_absent(self, key: str, value: str, ttl_s: float) -> bool:
        return bool(self._redis.set(key, value, px=_ms(ttl_s), nx=True))

    def compare_and_set(self, key: str, expected: str, value: str, ttl_s: float) -> bool:
        return bool(self._compare_and_set(keys=[key], args=[expected, value, _ms(ttl_s)]))

    def delete(self, key: str) -> None:
        self._redis.delete(key)

    def scan(self, prefix: str) -> dict[str, str]:
        keys = list(self._redis.scan_iter(match=_glob_escape(prefix) + "*", count=500))
        values = self._redis.mget(keys) if keys else []
        return {k: v for k, v in zip(keys, values) if v is not None}  # expired between the two calls

    def take_token(self, key: str, capacity: float, refill_per_s: float, now_s: float) -> float:
        ttl_ms = _ms(_bucket_ttl_s(capacity, refill_per_s))
        return float(self._take_token(keys=[key], args=[repr(capacity), repr(refill_per_s), repr(now_s), ttl_ms]))

    def enqueue(self, queue: str, item_id: str, payload: str, due_s: float) -> bool:
        return bool(self._enqueue(keys=_queue_keys(queue), args=[item_id, payload, repr(due_s)]))

    def lease(self, queue: str, now_s: float, lease_s: float, limit: int) -> list[tuple[str, str]]:
        flat = self._lease(keys=_queue_keys(queue), args=[repr(now_s), repr(now_s + lease_s), limit])
        return list(zip(flat[0::2], flat[1::2]))

    def reschedule(self, queue: str, item_id: str, payload: str, due_s: float) -> None:
        due_key, items_key = _queue_keys(queue)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(items_key, item_id, payload)
            pipe.zadd(due_key, {item_id: due_s})
            pipe.execute()

    def ack(self, queue: str, item_id: str) -> None:
        due_key, items_key = _queue_keys(queue)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(due_key, item_id)
            pipe.hdel(items_key, item_id)
            pipe.execute()

    def queue_size(self, queue: str) -> int:
        return int(self._redis.zcard(_queue_keys(queue)[0]))

    def close(self) -> None:
        self._redis.close()


def _queue_keys(queue: str) -> list[str]:
    # One hash tag, so both keys land on the same Redis Cluster slot for the scripts.
    return [f"{{{queue}}}:due", f"{{{queue}}}:items"]


def _ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _glob_escape(text: str) -> str:
    """A literal prefix in a Redis MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
