"""The Feast feature store as the rest of the service sees it: feature rows written online and
offline, a customer's online features read, a customer's rows erased."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore

from feature_repo.activity import ACTIVITY_FIELDS, VALID_UNTIL
from feature_repo.definitions import PROFILE_VIEW
from feature_repo.profile import PROFILE_FEATURE_NAMES
from feature_repo.store import StoreLocation
from service.adapters.features.layout import FeastLayout
from service.adapters.features.offline import OfflineBuffer, write_part
from service.adapters.features.online_features import DEFAULT_LAG, OnlineFeatures
from service.adapters.features.redis_reads import RedisOnlineReads
from service.adapters.features.sdk_reads import FeastSdkReads
from service.adapters.features.sqlite_reads import SQLiteOnlineReads
from service.adapters.features.watermark import PipelineWatermark
from service.adapters.features.writers import (
    OnlineWriter,
    RedisOnlineWriter,
    SQLiteOnlineWriter,
)


class FeastFeatures:
    """Reads and writes Feast's online layout directly (Redis or SQLite); ``read_through_sdk``
    is the same read through Feast, and contract tests hold the two equal."""

    def __init__(
        self,
        store: FeatureStore,
        where: StoreLocation,
        pipeline: PipelineWatermark | None = None,
        allowed_lag: timedelta = DEFAULT_LAG,
    ) -> None:
        self.store = store
        self.where = where
        #: How far the stream is processed, stamped on every read (its freshness rule).
        self.pipeline = pipeline
        self.allowed_lag = allowed_lag
        layout = FeastLayout(store)
        self.online: OnlineWriter
        self.reads: RedisOnlineReads | SQLiteOnlineReads
        if where.online == "redis":
            self.online = RedisOnlineWriter(store, layout)
            self.reads = RedisOnlineReads(store, layout)
        else:
            self.online = SQLiteOnlineWriter(store, layout)
            self.reads = SQLiteOnlineReads(store, layout)
        self.sdk = FeastSdkReads(store)

    def write(self, rows: pd.DataFrame) -> None:
        """``rows``: customer_id, event_timestamp and every feature column, online and offline."""
        if rows.empty:
            return
        customers = rows["customer_id"].tolist()
        stamps = pd.to_datetime(rows["event_timestamp"], utc=True)
        as_of_us = stamps.to_numpy(dtype="datetime64[us]").astype(np.int64)
        if VALID_UNTIL not in rows:  # rows that do not say until when they hold
            rows = rows.assign(**{VALID_UNTIL: np.nan})
        matrix = rows[list(ACTIVITY_FIELDS)].to_numpy(dtype=np.float64)
        self.online.write(customers, as_of_us, matrix)
        offline = OfflineBuffer(self.where)
        offline.add(customers, as_of_us, matrix)
        offline.flush()

    def write_profiles(self, rows: pd.DataFrame) -> None:
        """Profile rows (``feature_repo.profile.profile_rows``) online and offline, one part per
        extract time."""
        if rows.empty:
            return
        self.store.write_to_online_store(PROFILE_VIEW, rows)
        stamp = pd.Timestamp(rows["event_timestamp"].max())
        table = pa.Table.from_pandas(
            rows[["customer_id", "event_timestamp", *PROFILE_FEATURE_NAMES]], preserve_index=False
        )
        write_part(
            self.where.offline_dir / PROFILE_VIEW, table, f"extract-{stamp:%Y%m%dT%H%M%S}.parquet"
        )

    def erase(self, customer_id: str) -> None:
        self.online.erase(customer_id)

    def read(self, customer_id: str) -> OnlineFeatures:
        """Every scoring feature (None when unknown) with each view's row time, in one round
        trip (Redis) or two indexed lookups (SQLite)."""
        return self._stamped(self.reads.read(customer_id))

    def read_many(self, customer_ids: Sequence[str]) -> list[OnlineFeatures]:
        """``read`` of each of ``customer_ids``: in one round trip on Redis (batch work)."""
        if isinstance(self.reads, RedisOnlineReads):
            return [self._stamped(o) for o in self.reads.read_many(customer_ids)]
        return [self.read(c) for c in customer_ids]

    def _stamped(self, online: OnlineFeatures) -> OnlineFeatures:
        """``online`` with what its freshness is judged by: the stream's watermark and the
        allowed lag."""
        watermark = None if self.pipeline is None else self.pipeline.current()
        return replace(online, watermark=watermark, allowed_lag=self.allowed_lag)

    @property
    def asynchronous(self) -> bool:
        """Whether ``read_async`` reads on the event loop, without a thread (Redis)."""
        return self.reads.asynchronous

    async def read_async(self, customer_id: str) -> OnlineFeatures:
        return self._stamped(await self.reads.read_async(customer_id))

    async def close_async(self) -> None:
        """Close what ``read_async`` opened on the running event loop."""
        await self.reads.close_async()

    def read_through_sdk(self, customer_id: str) -> OnlineFeatures:
        """The same read through the Feast SDK's ``get_online_features``."""
        return self._stamped(self.sdk.read(customer_id))
