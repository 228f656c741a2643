"""The Feast adapters: write feature rows online and offline, read a customer's online features.

Online writes go through Feast's own online-store code (``SdkOnlineWriter``), except for Redis,
where ``RedisOnlineWriter`` writes Feast's Redis layout directly (entity key, murmur3 field
names, ``ValueProto`` doubles, ``_ts:<view>`` timestamps) without building a protobuf object per
value — the stream's hot path. A contract test reads both back through the Feast SDK and
compares the raw hashes byte for byte.

Every row written online is also buffered for the offline store (a folder of Parquet parts
behind the feature view's ``FileSource``), so a point-in-time training set sees exactly the
values serving saw.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from feature_repo.aggregates import FEATURE_NAMES
from feature_repo.definitions import ACTIVITY_SERVICE, ACTIVITY_VIEW, PROFILE_VIEW, SCORING_FEATURES
from feature_repo.profile import PROFILE_FEATURE_NAMES
from feature_repo.store import StoreLocation


@dataclass(frozen=True)
class OnlineFeatures:
    customer_id: str
    values: dict[str, float | None]
    as_of: datetime | None

    @property
    def known(self) -> bool:
        return self.as_of is not None


class OnlineWriter(Protocol):
    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None: ...

    def erase(self, customer_id: str) -> None:
        """Remove every view's online row of the customer (Feast has no per-entity delete)."""
        ...


def _frame(customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(matrix, columns=list(FEATURE_NAMES))
    frame.insert(0, "event_timestamp", pd.to_datetime(as_of_us, unit="us", utc=True))
    frame.insert(0, "customer_id", customers)
    return frame


class SdkOnlineWriter:
    """Feast's ``write_to_online_store``: any online store Feast supports."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if customers:
            self.store.write_to_online_store(ACTIVITY_VIEW, _frame(customers, as_of_us, matrix))


#: ``feast.types.Value`` with ``double_val`` (field 5, 64-bit): tag byte 0x29, little-endian.
_DOUBLE = np.dtype([("tag", "u1"), ("value", "<f8")])


class RedisOnlineWriter:
    """Feast's Redis layout written in one pipeline per batch, values encoded with numpy."""

    def __init__(self, store: FeatureStore) -> None:
        from feast.infra.online_stores.redis import RedisOnlineStore, _mmh3, _redis_key

        self.store = store
        config = store.config
        self._project = config.project
        self._version = config.entity_key_serialization_version
        self._redis_key = _redis_key
        online = store._get_provider().online_store  # type: ignore[attr-defined]
        assert isinstance(online, RedisOnlineStore)
        self._client = online._get_client(config.online_store)
        self._fields = [_mmh3(f"{ACTIVITY_VIEW}:{name}") for name in FEATURE_NAMES]
        self._ts_field = f"_ts:{ACTIVITY_VIEW}"

    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        blob, width = _encode_doubles(matrix)
        row_bytes = width * matrix.shape[1]
        fields = self._fields
        offsets = [j * width for j in range(len(fields))]
        with self._client.pipeline(transaction=False) as pipe:
            for i, customer in enumerate(customers):
                key = self._redis_key(
                    self._project,
                    EntityKey(
                        join_keys=["customer_id"], entity_values=[Value(string_val=customer)]
                    ),
                    entity_key_serialization_version=self._version,
                )
                row = blob[i * row_bytes : (i + 1) * row_bytes]
                seconds, micros = divmod(int(as_of_us[i]), 1_000_000)
                # HSET key field value ...: Feast's fields, without building a dict per row.
                flat = [
                    part
                    for field, at in zip(fields, offsets, strict=True)
                    for part in (field, row[at : at + width])
                ]
                pipe.execute_command(
                    "HSET", key, *flat, self._ts_field, _timestamp(seconds, micros * 1000)
                )
            pipe.execute()

    def erase(self, customer_id: str) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        # Feast keeps all of an entity's views in one hash: deleting it erases them all.
        key = self._redis_key(
            self._project,
            EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)]),
            entity_key_serialization_version=self._version,
        )
        self._client.delete(key)


class SQLiteOnlineWriter:
    """Feast's SQLite online table written with one ``executemany`` per batch (Feast's own
    write runs one statement per feature value)."""

    def __init__(self, store: FeatureStore) -> None:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id

        config = store.config
        online = store._get_provider().online_store  # type: ignore[attr-defined]
        assert isinstance(online, SqliteOnlineStore)
        self._conn = online._get_conn(config)
        versioning = getattr(config.registry, "enable_online_feature_view_versioning", False)
        table, *_ = self._tables = [
            _table_id(config.project, store.get_feature_view(name), versioning)
            for name in (ACTIVITY_VIEW, PROFILE_VIEW)
        ]
        self._sql = (
            f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, '
            "created_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO "
            "UPDATE SET value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
        )
        self._version = config.entity_key_serialization_version

    def write(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        blob, width = _encode_doubles(matrix)
        rows = []
        for i, customer in enumerate(customers):
            key = serialize_entity_key(
                EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer)]),
                entity_key_serialization_version=self._version,
            )
            stamp = datetime.fromtimestamp(int(as_of_us[i]) / 1e6, UTC).replace(tzinfo=None)
            start = i * width * len(FEATURE_NAMES)
            for j, name in enumerate(FEATURE_NAMES):
                at = start + j * width
                rows.append(
                    (key, name, blob[at : at + width], str(float(matrix[i, j])), stamp, None)
                )
        with self._conn:
            self._conn.executemany(self._sql, rows)

    def erase(self, customer_id: str) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)]),
            entity_key_serialization_version=self._version,
        )
        with self._conn:
            for table in self._tables:
                self._conn.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,))


def _encode_doubles(matrix: np.ndarray) -> tuple[bytes, int]:
    encoded = np.empty(matrix.shape, dtype=_DOUBLE)
    encoded["tag"] = 0x29
    encoded["value"] = matrix
    return encoded.tobytes(), _DOUBLE.itemsize


def _timestamp(seconds: int, nanos: int) -> bytes:
    """``google.protobuf.Timestamp`` wire format (fields 1 and 2 as varints)."""
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds)
    if nanos:
        out += b"\x10" + _varint(nanos)
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_part(folder: Path, table: pa.Table, name: str | None = None) -> Path:
    """Write a Parquet part durably (fsync, then an atomic rename) into an offline folder."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = folder / f".{name}.tmp"
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    return temporary.rename(folder / name)


class OfflineBuffer:
    """Feature rows waiting to be written to the offline store as one Parquet part."""

    def __init__(self, where: StoreLocation) -> None:
        self.folder = where.offline_dir / ACTIVITY_VIEW
        self.folder.mkdir(parents=True, exist_ok=True)
        self._parts: list[pa.Table] = []
        self.rows = 0

    def add(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        columns: dict[str, Any] = {
            "customer_id": pa.array(customers, pa.string()),
            "event_timestamp": pa.array(as_of_us, pa.timestamp("us", tz="UTC")),
        }
        for j, name in enumerate(FEATURE_NAMES):
            columns[name] = pa.array(matrix[:, j], pa.float64())
        self._parts.append(pa.table(columns))
        self.rows += len(customers)

    def flush(self) -> int:
        """Write the buffered rows durably (fsync, then an atomic rename); returns the count."""
        if not self._parts:
            return 0
        write_part(self.folder, pa.concat_tables(self._parts))
        written, self._parts, self.rows = self.rows, [], 0
        return written


class FeastFeatures:
    """Reads through the Feast SDK; writes online through the fastest writer for the store."""

    def __init__(self, store: FeatureStore, where: StoreLocation) -> None:
        self.store = store
        self.where = where
        self._service = store.get_feature_service(ACTIVITY_SERVICE)
        self.online: OnlineWriter = (
            RedisOnlineWriter(store) if where.online == "redis" else SQLiteOnlineWriter(store)
        )

    def write(self, rows: pd.DataFrame) -> None:
        """``rows``: customer_id, event_timestamp and every feature column, online and offline."""
        if rows.empty:
            return
        customers = rows["customer_id"].tolist()
        stamps = pd.to_datetime(rows["event_timestamp"], utc=True)
        as_of_us = stamps.to_numpy(dtype="datetime64[us]").astype(np.int64)
        matrix = rows[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
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
        """Every scoring feature (None when unknown); ``as_of`` is the activity row's time."""
        response = self.store.get_online_features(
            features=self._service, entity_rows=[{"customer_id": customer_id}]
        ).to_dict(include_event_timestamps=True)
        values: dict[str, Any] = {name: response[name][0] for name in SCORING_FEATURES}
        # Feast reports each feature's event time as epoch seconds, 0 when it has no value.
        stamps = [response[f"{name}__ts"][0] or 0 for name in FEATURE_NAMES]
        oldest = min(stamps)
        as_of = datetime.fromtimestamp(oldest, UTC) if oldest > 0 else None
        return OnlineFeatures(customer_id, values, as_of)
