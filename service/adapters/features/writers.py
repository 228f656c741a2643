"""Writing the stream's feature rows into Feast's online store: Feast's own write for any store,
and direct writes of Feast's layout for Redis and SQLite, the stream's hot path."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd
import redis
from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from feature_repo.activity import ACTIVITY_FIELDS
from feature_repo.definitions import ACTIVITY_VIEW
from feature_repo.scores import SCORE_FIELDS, SCORES_VIEW
from feature_repo.windows import as_activity_rows
from service.adapters.features.layout import (
    FeastLayout,
    encode_rows,
    encode_time,
    hset_commands,
    resp_bulk,
)


class OnlineWriter(Protocol):
    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        """Each customer's activity row (``matrix``: one row per customer, ``ACTIVITY_FIELDS``
        columns, or the features alone: see ``as_activity_rows``) as of its time in
        microseconds since the epoch."""
        ...

    def write_scores(self, customers: list[str], at_us: np.ndarray, matrix: np.ndarray) -> None:
        """Each customer's scores kept ready (``matrix``: ``SCORE_FIELDS`` columns), as of when
        they were computed."""
        ...

    def drop_scores(self, customers: list[str]) -> None:
        """Remove the customers' scores kept ready (profiling consent withdrawn)."""
        ...

    def erase(self, customer_id: str) -> None:
        """Remove every view's online row of the customer (Feast has no per-entity delete)."""
        ...


class SdkOnlineWriter:
    """Feast's ``write_to_online_store``, for any online store Feast supports: the reference the
    direct writers below are held equal to."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        matrix = as_activity_rows(matrix)
        frame = pd.DataFrame(matrix, columns=list(ACTIVITY_FIELDS))
        frame.insert(0, "event_timestamp", pd.to_datetime(as_of_us, unit="us", utc=True))
        frame.insert(0, "customer_id", customers)
        self.store.write_to_online_store(ACTIVITY_VIEW, frame)

    def write_scores(self, customers: list[str], at_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        frame = pd.DataFrame(matrix, columns=list(SCORE_FIELDS))
        frame.insert(0, "event_timestamp", pd.to_datetime(at_us, unit="us", utc=True))
        frame.insert(0, "customer_id", customers)
        self.store.write_to_online_store(SCORES_VIEW, frame)

    def drop_scores(self, customers: list[str]) -> None:
        raise NotImplementedError("Feast's SDK deletes no row: the direct writers do")


class _DirectWriter:
    """Writes the activity view and the scores view in Feast's layout (``_write``)."""

    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        self._write(ACTIVITY_VIEW, customers, as_of_us, as_activity_rows(matrix))

    def write_scores(self, customers: list[str], at_us: np.ndarray, matrix: np.ndarray) -> None:
        self._write(SCORES_VIEW, customers, at_us, matrix)

    def _write(
        self, view: str, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray
    ) -> None:
        raise NotImplementedError


class RedisOnlineWriter(_DirectWriter):
    """One ``HSET`` per customer in one pipeline per batch. Feast's own write reads every stored
    row time first, to skip a row older than the stored one; the stream writes each customer's
    state as it folds events in, so the latest write is the newest row."""

    def __init__(self, store: FeatureStore, layout: FeastLayout) -> None:
        online = store._get_provider().online_store
        assert isinstance(online, RedisOnlineStore)
        self._client: Any = online._get_client(store.config.online_store)
        self._layout = layout
        self._fields = {
            view: (
                [layout.redis_field(view, name) for name in names],
                layout.redis_time_field(view),
            )
            for view, names in ((ACTIVITY_VIEW, ACTIVITY_FIELDS), (SCORES_VIEW, SCORE_FIELDS))
        }

    def _write(
        self, view: str, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray
    ) -> None:
        if not customers:
            return
        fields, time_field = self._fields[view]
        if isinstance(self._client, redis.Redis):  # a single server: the commands packed here
            tails = [resp_bulk(time_field) + resp_bulk(encode_time(at)) for at in as_of_us.tolist()]
            keys = [self._layout.redis_key(c) for c in customers]
            self._send(hset_commands(keys, fields, matrix, tails))
            return
        rows = encode_rows(matrix)
        with self._client.pipeline(transaction=False) as pipe:
            for customer, at, values in zip(customers, as_of_us.tolist(), rows, strict=True):
                mapping = dict(zip(fields, values, strict=True))
                mapping[time_field] = encode_time(at)
                pipe.hset(self._layout.redis_key(customer), mapping=mapping)
            pipe.execute()

    def _send(self, commands: list[bytes]) -> None:
        """``commands`` written as one buffer and every reply read after it, as redis-py's
        pipeline does with the commands it packs; the first error reply is raised."""
        pool = self._client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(commands)])
            failed = None
            for _ in commands:
                try:
                    connection.read_response()
                except redis.ResponseError as error:  # the others' replies still to read
                    failed = failed or error
            if failed is not None:
                raise failed
        except BaseException:
            connection.disconnect()  # replies may be left unread: not reusable
            raise
        finally:
            pool.release(connection)

    def drop_scores(self, customers: list[str]) -> None:
        fields, time_field = self._fields[SCORES_VIEW]
        with self._client.pipeline(transaction=False) as pipe:
            for customer in customers:
                pipe.hdel(self._layout.redis_key(customer), *fields, time_field)
            pipe.execute()

    def erase(self, customer_id: str) -> None:
        # Feast keeps all of an entity's views in one hash: deleting it erases them all.
        self._client.delete(self._layout.redis_key(customer_id))


class SQLiteOnlineWriter(_DirectWriter):
    """One ``executemany`` per batch into Feast's SQLite table (Feast's own write runs one
    statement per feature value)."""

    def __init__(self, store: FeatureStore, layout: FeastLayout) -> None:
        online = store._get_provider().online_store
        assert isinstance(online, SqliteOnlineStore)
        self._conn: sqlite3.Connection = online._get_conn(store.config)
        self._layout = layout
        self._sql = {
            view: (
                f'INSERT INTO "{layout.sqlite_tables[view]}" (entity_key, feature_name, '
                "value, value_text, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                "value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts"
            )
            for view in (ACTIVITY_VIEW, SCORES_VIEW)
        }
        self._names = {ACTIVITY_VIEW: ACTIVITY_FIELDS, SCORES_VIEW: SCORE_FIELDS}

    def _write(
        self, view: str, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray
    ) -> None:
        if not customers:
            return
        names = self._names[view]
        # A null (NaN) has no text, as Feast writes it.
        rows: list[tuple[bytes, str, bytes, str | None, datetime, None]] = []
        for customer, at, values, numbers in zip(
            customers, as_of_us.tolist(), encode_rows(matrix), matrix.tolist(), strict=True
        ):
            key = self._layout.entity_key(customer)
            stamp = datetime.fromtimestamp(at / 1e6, UTC).replace(tzinfo=None)
            rows.extend(
                (key, name, blob, None if math.isnan(number) else str(number), stamp, None)
                for name, blob, number in zip(names, values, numbers, strict=True)
            )
        with self._conn:
            self._conn.executemany(self._sql[view], rows)

    def drop_scores(self, customers: list[str]) -> None:
        table = self._layout.sqlite_tables[SCORES_VIEW]
        keys = [(self._layout.entity_key(c),) for c in customers]
        with self._conn:
            self._conn.executemany(f'DELETE FROM "{table}" WHERE entity_key = ?', keys)

    def erase(self, customer_id: str) -> None:
        key = self._layout.entity_key(customer_id)
        with self._conn:
            for table in self._layout.sqlite_tables.values():
                self._conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,))
