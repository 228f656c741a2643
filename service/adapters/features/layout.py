"""Feast's online layout: the keys, field names and value encodings Feast itself reads and
writes, built from Feast's public key encoding and protobuf types (and the hash Feast uses for
Redis fields) so the adapters beside this module store and read exactly what the Feast SDK does
(see docs/feast-storage.md)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import mmh3
import numpy as np
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id, compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from feature_repo.activity import ACTIVITY_FIELDS
from feature_repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW
from feature_repo.profile import PROFILE_FEATURE_NAMES
from feature_repo.scores import SCORE_FIELDS, SCORES_VIEW

#: Each view's fields, in the order a decision scores them (activity, then profile); the
#: activity row ends with until when it is exact (``VALID_UNTIL``), which no model scores.
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    ACTIVITY_VIEW: ACTIVITY_FIELDS,
    PROFILE_VIEW: tuple(PROFILE_FEATURE_NAMES),
}
#: What a decision's one online read gets: the features, then the scores kept ready.
READ_FIELDS: dict[str, tuple[str, ...]] = {**VIEW_FEATURES, SCORES_VIEW: SCORE_FIELDS}


class FeastLayout:
    """Where Feast keeps a customer's online rows, for one store's project and settings."""

    def __init__(self, store: FeatureStore) -> None:
        config = store.config
        self.project: str = config.project
        self.version: int = config.entity_key_serialization_version
        versioning = bool(config.registry.enable_online_feature_view_versioning)
        views = {name: store.get_feature_view(name) for name in READ_FIELDS}
        #: The name each view is stored under (a version suffix when Feast versions views).
        self.stored_names = {
            name: compute_versioned_name(view, versioning) for name, view in views.items()
        }
        #: Each view's table in Feast's SQLite online store.
        self.sqlite_tables = {
            name: compute_table_id(self.project, view, versioning) for name, view in views.items()
        }

    def entity_key(self, customer_id: str) -> bytes:
        """The customer's serialized entity key (the SQLite store's ``entity_key`` column)."""
        key: bytes = serialize_entity_key(
            _entity(customer_id), entity_key_serialization_version=self.version
        )
        return key

    def redis_key(self, customer_id: str) -> bytes:
        """The Redis hash that holds every view of the customer: the serialized entity key,
        then the project's name (UTF-8), as Feast's Redis store names it."""
        return self.entity_key(customer_id) + self.project.encode()

    def redis_field(self, view: str, name: str) -> bytes:
        """The hash field of one feature's value: MurmurHash3 (x86, 32 bits, seed 0) of
        ``view:feature`` as four little-endian bytes, the field Feast's Redis store (and its
        Java serving) computes."""
        digest = mmh3.hash(f"{self.stored_names[view]}:{name}", signed=False)
        return digest.to_bytes(4, "little")

    def redis_time_field(self, view: str) -> bytes:
        """The hash field of a view's row time."""
        return f"_ts:{self.stored_names[view]}".encode()


def _entity(customer_id: str) -> EntityKey:
    return EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])


#: A double as Feast stores it: a serialized ``ValueProto`` holding ``double_val`` alone (field
#: 5, wire type 1: tag byte 0x29), then the 8 bytes of the value, little-endian.
DOUBLE_TAG = 0x29
TAGGED_DOUBLE = np.dtype([("tag", "u1"), ("value", "<f8")])


def encode_rows(matrix: np.ndarray) -> list[list[bytes]]:
    """Each row's values as Feast stores a double (a serialized ``ValueProto``; a NaN as Feast
    stores it, a null: the empty message). The whole matrix is laid out in one array of tagged
    doubles and cut into values: building a message per value costs the stream worker more CPU
    than folding the events in."""
    count, columns = matrix.shape
    if columns == 0:
        return [[] for _ in range(count)]
    tagged = np.empty(matrix.shape, dtype=TAGGED_DOUBLE)
    tagged["tag"] = DOUBLE_TAG
    tagged["value"] = matrix
    blob = tagged.tobytes()
    width = TAGGED_DOUBLE.itemsize
    row_bytes = width * columns
    rows = [
        [blob[at : at + width] for at in range(start, start + row_bytes, width)]
        for start in range(0, count * row_bytes, row_bytes)
    ]
    for i, j in zip(*np.nonzero(np.isnan(matrix)), strict=True):
        rows[i][j] = b""
    return rows


def resp_bulk(data: bytes) -> bytes:
    """One argument of a Redis command in the Redis protocol (a bulk string)."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def hset_commands(
    keys: Sequence[bytes], fields: Sequence[bytes], matrix: np.ndarray, tails: Sequence[bytes]
) -> list[bytes]:
    """``HSET key field value ...`` per row of ``matrix``, in the Redis protocol: its values
    encoded as ``encode_rows`` encodes them, then ``tails`` (one field and value more per row,
    each already a pair of ``resp_bulk``). The same bytes redis-py packs for each ``hset``,
    laid out for the whole matrix in one array (each row is a template of the fields with its
    values copied in): packing every argument of every row one by one cost the stream more
    than folding its events in."""
    count, columns = matrix.shape
    value_head, crlf = b"$%d\r\n" % TAGGED_DOUBLE.itemsize, b"\r\n"
    segment = len(value_head) + TAGGED_DOUBLE.itemsize + len(crlf)
    template, starts = bytearray(), []
    for field in fields:
        template += resp_bulk(field)
        starts.append(len(template))
        template += value_head + bytes(TAGGED_DOUBLE.itemsize) + crlf
    width = len(template)
    starts_at = np.array(starts, np.int64)
    value_at = (starts_at[:, None] + len(value_head) + np.arange(TAGGED_DOUBLE.itemsize)).ravel()
    out = np.tile(np.frombuffer(bytes(template), np.uint8), (count, 1))
    tagged = np.empty(matrix.shape, dtype=TAGGED_DOUBLE)
    tagged["tag"] = DOUBLE_TAG
    tagged["value"] = matrix
    out[:, value_at] = tagged.view(np.uint8).reshape(count, columns * TAGGED_DOUBLE.itemsize)
    missing = np.isnan(matrix)
    if missing.any():  # a null is the empty message: "$0\r\n\r\n", the rest of its slot cut
        null = np.frombuffer(b"$0\r\n\r\n", np.uint8)
        rows, cols = np.nonzero(missing)
        slot = starts_at[cols][:, None] + np.arange(segment)
        keep = np.ones(out.shape, bool)
        keep[rows[:, None], slot[:, len(null) :]] = False
        out[rows[:, None], slot[:, : len(null)]] = null
        lengths = width - missing.sum(axis=1) * (segment - len(null))
        blob = out[keep].tobytes()
    else:
        lengths = np.full(count, width)
        blob = out.tobytes()
    ends = np.cumsum(lengths).tolist()
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (columns + 1))
    return [
        b"".join((head, resp_bulk(key), blob[end - length : end], tail))
        for key, length, end, tail in zip(keys, lengths.tolist(), ends, tails, strict=True)
    ]


def encode_time(as_of_us: int) -> bytes:
    """A row time as Feast stores it in Redis (a serialized ``Timestamp``)."""
    seconds, micros = divmod(as_of_us, 1_000_000)
    encoded: bytes = Timestamp(seconds=seconds, nanos=micros * 1000).SerializeToString()
    return encoded


def decode_value(raw: bytes | None) -> float | None:
    """A stored ``ValueProto`` as a float (None: absent, or a null)."""
    if not raw:
        return None
    value = Value.FromString(raw)
    kind = value.WhichOneof("val")
    return None if kind is None else float(getattr(value, kind))


def decode_array(raws: Sequence[bytes | None]) -> np.ndarray | None:
    """Stored values as float64s, NaN for a null or an absent value, if every one is a double
    or a null (None otherwise). The stream, the profile load and the score keeper write only
    those (a NaN as a null): they are decoded in one read of their joined bytes, where parsing
    each value as a message costs a decision more CPU than its scoring."""
    width = TAGGED_DOUBLE.itemsize
    present = [raw or b"" for raw in raws]
    lengths = np.fromiter(map(len, present), np.int64, len(present))
    doubles = lengths == width
    if not (doubles | (lengths == 0)).all():
        return None
    tagged = np.frombuffer(b"".join(present), dtype=TAGGED_DOUBLE)
    if not (tagged["tag"] == DOUBLE_TAG).all():
        return None
    laid = np.full(len(present), np.nan)
    laid[doubles] = tagged["value"]
    return laid


def as_values(laid: np.ndarray) -> list[float | None]:
    """``decode_array``'s values as floats, None for a null."""
    values: list[float | None] = list(laid.tolist())
    for i in np.flatnonzero(np.isnan(laid)).tolist():
        values[i] = None
    return values


def decode_values(raws: Sequence[bytes | None]) -> list[float | None]:
    """``decode_value`` of each: doubles and nulls at once (``decode_array``), anything else
    (another type) value by value, by the protobuf library."""
    laid = decode_array(raws)
    return as_values(laid) if laid is not None else [decode_value(raw) for raw in raws]


def decode_time(raw: bytes | None) -> datetime | None:
    """A stored ``Timestamp`` (Redis) as an aware UTC time."""
    if not raw:
        return None
    stamp = Timestamp.FromString(raw)
    return datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, UTC)


def sqlite_time(stamp: object) -> datetime:
    """Feast's SQLite store keeps naive UTC times (as datetimes or ISO text)."""
    moment = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
