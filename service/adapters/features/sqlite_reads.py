"""A customer's online features read from Feast's SQLite store: one indexed lookup per view."""

from __future__ import annotations

import sqlite3

from feast import FeatureStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from service.adapters.features.layout import (
    READ_FIELDS,
    FeastLayout,
    decode_values,
    sqlite_time,
)
from service.adapters.features.online_features import OnlineFeatures


class SQLiteOnlineReads:
    """On Feast's own connection to its SQLite file; synchronous only (SQLite has no network
    wait worth an event loop: decisions read it on a thread)."""

    asynchronous = False

    def __init__(self, store: FeatureStore, layout: FeastLayout) -> None:
        online = store._get_provider().online_store
        assert isinstance(online, SqliteOnlineStore)
        self._conn: sqlite3.Connection = online._get_conn(store.config)
        self._layout = layout
        self._queries = {
            view: f'SELECT feature_name, value, event_ts FROM "{table}" WHERE entity_key = ?'
            for view, table in layout.sqlite_tables.items()
        }

    def read(self, customer_id: str) -> OnlineFeatures:
        key = self._layout.entity_key(customer_id)
        values: dict[str, float | None] = {}
        stamps = {}
        for view in READ_FIELDS:
            rows = self._conn.execute(self._queries[view], (key,)).fetchall()
            values.update(
                zip((r[0] for r in rows), decode_values([r[1] for r in rows]), strict=True)
            )
            stamps[view] = sqlite_time(rows[0][2]) if rows else None
        return OnlineFeatures.of_views(customer_id, values, stamps)

    async def read_async(self, customer_id: str) -> OnlineFeatures:
        raise NotImplementedError("the SQLite online store is read on a thread")

    async def close_async(self) -> None:
        """Nothing to close: ``read_async`` opens nothing."""
