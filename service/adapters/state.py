"""The stream worker's durable state, one blob per customer, behind one small interface.

Per batch the worker reads the touched customers' states, folds the events in, and writes them
back in one atomic operation (an SQLite transaction, a Redis MSET) before it writes features or
commits offsets: a crash anywhere leaves states, features and offsets in an order that a
redelivery repairs (see feature_repo/arrival.py for the de-duplication rules). States moved
by timers through several midnights are held until their rows are durable (``HoldingStates``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

#: SQLite's default limit on host parameters is 999 (older builds); stay under it.
_SQLITE_CHUNK = 900
#: A Redis call that takes longer than this fails (and the batch is retried after restart).
REDIS_TIMEOUT_S = 10.0

T = TypeVar("T")


class StateStore(Protocol):
    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...
    def put_many(self, items: Mapping[str, bytes]) -> None: ...
    def delete(self, key: str) -> None: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


class ThreadConnections:
    """One SQLite connection per thread to a file (WAL, autocommit: each store says where its
    transactions are), made on first use."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class SQLiteStateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections = ThreadConnections(path)
        self._conn().execute(
            "create table if not exists window_state (customer text primary key, state blob)"
        )

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        conn = self._conn()
        for start in range(0, len(keys), _SQLITE_CHUNK):
            chunk = keys[start : start + _SQLITE_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"select customer, state from window_state where customer in ({marks})", chunk
            )
            found.update(rows)
        return [found.get(k) for k in keys]

    def put_many(self, items: Mapping[str, bytes]) -> None:
        conn = self._conn()
        conn.execute("begin immediate")
        try:
            conn.executemany(
                "insert or replace into window_state (customer, state) values (?, ?)",
                items.items(),
            )
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise

    def delete(self, key: str) -> None:
        self._conn().execute("delete from window_state where customer = ?", (key,))

    def clear(self) -> None:
        self._conn().execute("delete from window_state")

    def close(self) -> None:
        self._connections.close()


class RedisStateStore:
    def __init__(self, url: str, namespace: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self.prefix = f"nextbest:{namespace}:state:"

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return self.client.mget([self.prefix + k for k in keys])  # type: ignore[return-value]

    def put_many(self, items: Mapping[str, bytes]) -> None:
        if items:
            # MSET is atomic: all customers' states of a batch change together.
            self.client.mset({self.prefix + k: v for k, v in items.items()})

    def delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def clear(self) -> None:
        for keys in _batched(self.client.scan_iter(match=self.prefix + "*", count=1000), 1000):
            self.client.delete(*keys)

    def close(self) -> None:
        self.client.close()


class HoldingStates:
    """A state store that writes through, except the states it is told to hold: those wait in
    memory until ``flush``, and so does every later write of those customers. Reads see them.

    A timer that moves a customer through several midnights writes a row per midnight to the
    offline buffer; if her state were stored before those rows are durable, a crash would lose
    them for good (firing the timer again finds her state already moved on). The worker holds
    such states and flushes them once the rows are durable. Events' states are written through
    as before, inside their batch (a store refusing one is that batch's failure, isolated)."""

    def __init__(self, store: StateStore, chunk: int = 2_000) -> None:
        self.store = store
        self.chunk = chunk
        self._held: dict[str, bytes] = {}

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        stored = [k for k in keys if k not in self._held]
        found = dict(zip(stored, self.store.get_many(stored), strict=True))
        return [self._held[k] if k in self._held else found[k] for k in keys]

    def put_many(self, items: Mapping[str, bytes]) -> None:
        through = {k: v for k, v in items.items() if k not in self._held}
        self.store.put_many(through)
        self._held.update((k, v) for k, v in items.items() if k not in through)

    def hold_many(self, items: Mapping[str, bytes]) -> None:
        self._held.update(items)

    def flush(self) -> list[str]:
        """Store the states held (a chunk at a time: each customer's state is one value, so a
        crash between chunks leaves every state whole). Returns their customers."""
        customers = list(self._held)
        for part in _batched(customers, self.chunk):
            self.store.put_many({c: self._held[c] for c in part})
        self._held.clear()
        return customers

    def delete(self, key: str) -> None:
        self._held.pop(key, None)
        self.store.delete(key)

    def clear(self) -> None:
        self._held.clear()
        self.store.clear()

    def close(self) -> None:
        self.store.close()


def _batched(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
