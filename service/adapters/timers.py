"""The stream worker's timers: per partition, each customer's next moment her features change
with no new event (``WindowState.next_change_us``), in the stream state's kind of store.

A customer's timers live under the partition her events arrive on, so the worker that owns the
partition fires them, and a rebalance hands them over with the partition. Two rules make a
late or repeated write harmless:

- a timer only ever moves later (a customer's row time never goes back, and her next change is
  the midnight after it): ``schedule`` keeps the later of the stored and the new moment;
- a timer is cancelled only if it is not later than the moment its canceller saw: a cancel
  computed before an event re-armed the timer does not remove the new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.adapters.state import REDIS_TIMEOUT_S, ThreadConnections


@dataclass(frozen=True)
class TimerChange:
    partition: int
    customer: str
    #: The new moment (epoch µs), or None to cancel.
    due_us: int | None
    #: For a cancel: the moment it was computed against (a later timer stays).
    seen_us: int = 0


@dataclass(frozen=True)
class Timer:
    partition: int
    customer: str
    due_us: int


class TimerIndex(Protocol):
    def apply(self, changes: Sequence[TimerChange]) -> None: ...
    def due(self, upto: Mapping[int, int], limit: int) -> list[Timer]:
        """Up to ``limit`` timers, earliest first, due on each partition of ``upto`` by its
        moment (epoch µs)."""
        ...

    def count(self, partitions: Sequence[int]) -> int: ...
    def customers(self, partition: int, cursor: int, count: int) -> tuple[int, list[str]]:
        """A page of the customers with a timer on ``partition``, as ``SCAN`` pages: start at
        cursor 0, go on with the cursor returned until it is 0 again."""
        ...

    def delete(self, customer: str) -> None:
        """Remove the customer's timers on every partition (her erasure)."""
        ...

    def clear(self) -> None: ...
    def close(self) -> None: ...


class SQLiteTimerIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections = ThreadConnections(path)
        conn = self._conn()
        conn.execute(
            "create table if not exists timers (partition integer not null, "
            "customer text not null, due integer not null, primary key (partition, customer))"
        )
        conn.execute("create index if not exists timers_due on timers (partition, due)")

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def apply(self, changes: Sequence[TimerChange]) -> None:
        if not changes:
            return
        conn = self._conn()
        conn.execute("begin immediate")
        try:
            conn.executemany(
                "insert into timers (partition, customer, due) values (?, ?, ?) "
                "on conflict (partition, customer) do update set due = max(due, excluded.due)",
                [(c.partition, c.customer, c.due_us) for c in changes if c.due_us is not None],
            )
            conn.executemany(
                "delete from timers where partition = ? and customer = ? and due <= ?",
                [(c.partition, c.customer, c.seen_us) for c in changes if c.due_us is None],
            )
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise

    def due(self, upto: Mapping[int, int], limit: int) -> list[Timer]:
        if not upto or limit <= 0:
            return []
        conn = self._conn()
        found: list[Timer] = []
        for partition, moment in upto.items():
            rows = conn.execute(
                "select customer, due from timers where partition = ? and due <= ? "
                "order by due limit ?",
                (partition, moment, limit),
            )
            found.extend(Timer(partition, c, d) for c, d in rows)
        found.sort(key=lambda t: t.due_us)
        return found[:limit]

    def count(self, partitions: Sequence[int]) -> int:
        if not partitions:
            return 0
        marks = ",".join("?" * len(partitions))
        (n,) = (
            self._conn()
            .execute(f"select count(*) from timers where partition in ({marks})", tuple(partitions))
            .fetchone()
        )
        return int(n)

    def customers(self, partition: int, cursor: int, count: int) -> tuple[int, list[str]]:
        # The cursor is the last customer's rowid: pages hold however timers move meanwhile.
        rows = (
            self._conn()
            .execute(
                "select rowid, customer from timers where partition = ? and rowid > ? "
                "order by rowid limit ?",
                (partition, cursor, count),
            )
            .fetchall()
        )
        return (rows[-1][0] if len(rows) == count else 0), [r[1] for r in rows]

    def delete(self, customer: str) -> None:
        self._conn().execute("delete from timers where customer = ?", (customer,))

    def clear(self) -> None:
        self._conn().execute("delete from timers")

    def close(self) -> None:
        self._connections.close()


#: Cancels a timer unless it is later than the moment given (KEYS: the sets; ARGV: customer
#: and moment, by pairs, one pair per key).
_CANCEL = """
for i, key in ipairs(KEYS) do
  local customer, seen = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local due = redis.call('ZSCORE', key, customer)
  if due and tonumber(due) <= seen then redis.call('ZREM', key, customer) end
end
return 0
"""


class RedisTimerIndex:
    """A sorted set per partition: members are customers, scores their timers' moments (epoch
    µs, exact in a double for this era)."""

    def __init__(self, url: str, namespace: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self.prefix = f"nextbest:{namespace}:timers:"
        self._cancel: Any = self.client.register_script(_CANCEL)

    def _key(self, partition: int) -> str:
        return f"{self.prefix}{partition}"

    def apply(self, changes: Sequence[TimerChange]) -> None:
        if not changes:
            return
        later: dict[int, dict[str, int]] = {}
        for c in changes:
            if c.due_us is not None:
                mine = later.setdefault(c.partition, {})
                mine[c.customer] = max(mine.get(c.customer, c.due_us), c.due_us)
        cancels = [c for c in changes if c.due_us is None]
        with self.client.pipeline(transaction=True) as pipe:
            for partition, timers in later.items():
                # GT: a timer only moves later (see the module's rules).
                pipe.zadd(self._key(partition), timers, gt=True)
            if cancels:
                self._cancel(
                    keys=[self._key(c.partition) for c in cancels],
                    args=[part for c in cancels for part in (c.customer, c.seen_us)],
                    client=pipe,
                )
            pipe.execute()

    def due(self, upto: Mapping[int, int], limit: int) -> list[Timer]:
        if not upto or limit <= 0:
            return []
        partitions = list(upto)
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.zrangebyscore(
                    self._key(partition),
                    "-inf",
                    upto[partition],
                    start=0,
                    num=limit,
                    withscores=True,
                )
            replies = pipe.execute()
        found = [
            Timer(partition, member.decode(), int(score))
            for partition, reply in zip(partitions, replies, strict=True)
            for member, score in reply
        ]
        found.sort(key=lambda t: t.due_us)
        return found[:limit]

    def count(self, partitions: Sequence[int]) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.zcard(self._key(partition))
            return int(sum(pipe.execute()))

    def customers(self, partition: int, cursor: int, count: int) -> tuple[int, list[str]]:
        reply: Any = self.client.zscan(self._key(partition), cursor, count=count)
        following, members = reply
        return int(following), [member.decode() for member, _ in members]

    def delete(self, customer: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
                pipe.zrem(key, customer)
            pipe.execute()

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            self.client.delete(*keys)

    def close(self) -> None:
        self.client.close()


class WatermarkStore(Protocol):
    """Per partition, how far the stream is processed (epoch µs): written by the workers,
    read by serving to tell a pipeline that is behind."""

    def publish(self, watermarks: Mapping[int, int]) -> None: ...
    def read(self) -> dict[int, int]: ...
    def close(self) -> None: ...


class SQLiteWatermarks:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._connections = ThreadConnections(path)
        self._conn().execute(
            "create table if not exists watermarks "
            "(partition integer primary key, at integer not null)"
        )

    def _conn(self) -> sqlite3.Connection:
        return self._connections.get()

    def publish(self, watermarks: Mapping[int, int]) -> None:
        if watermarks:
            self._conn().executemany(
                "insert into watermarks (partition, at) values (?, ?) "
                "on conflict (partition) do update set at = excluded.at",
                list(watermarks.items()),
            )

    def read(self) -> dict[int, int]:
        return dict(self._conn().execute("select partition, at from watermarks"))

    def close(self) -> None:
        self._connections.close()


class RedisWatermarks:
    def __init__(self, url: str, namespace: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.key = f"nextbest:{namespace}:watermarks"

    def publish(self, watermarks: Mapping[int, int]) -> None:
        if watermarks:
            self.client.hset(self.key, mapping={str(p): at for p, at in watermarks.items()})

    def read(self) -> dict[int, int]:
        found: dict[bytes, bytes] = self.client.hgetall(self.key)  # type: ignore[assignment]
        return {int(p): int(at) for p, at in found.items()}

    def close(self) -> None:
        self.client.close()
