"""The adapters' layout against Feast's own: keys and fields are those Feast's helpers compute,
a feature row is stored as Feast stores a Float64 feature, and read back as Feast reads it."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import redis

# Feast's private helpers are the reference here: the layout computes the same with public APIs.
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from hypothesis import example, given
from hypothesis import strategies as st

from feature_repo.store import StoreLocation, open_store
from service.adapters.features.layout import (
    VIEW_FEATURES,
    FeastLayout,
    decode_value,
    decode_values,
    encode_rows,
    encode_time,
    hset_commands,
    resp_bulk,
)

EDGES = [0.0, -0.0, 1e-300, -1e308, math.inf, -math.inf, 123456789.25, 91.0, 5e-324]
FINITE_OR_INFINITE = st.floats(allow_nan=False)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> FeastLayout:
    where = StoreLocation(tmp_path_factory.mktemp("feast"), "layout_ü")
    return FeastLayout(open_store(where))


@given(customer_id=st.text(max_size=40))
@example(customer_id="C-000001")
def test_redis_keys_are_those_feast_computes(layout: FeastLayout, customer_id: str) -> None:
    entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])
    theirs = _redis_key(layout.project, entity, entity_key_serialization_version=layout.version)
    assert layout.redis_key(customer_id) == theirs
    assert layout.redis_key(customer_id).startswith(layout.entity_key(customer_id))


@given(view=st.sampled_from(sorted(VIEW_FEATURES)), name=st.text(max_size=40))
@example(view=sorted(VIEW_FEATURES)[0], name=VIEW_FEATURES[sorted(VIEW_FEATURES)[0]][0])
def test_redis_fields_are_those_feast_computes(layout: FeastLayout, view: str, name: str) -> None:
    assert layout.redis_field(view, name) == _mmh3(f"{layout.stored_names[view]}:{name}")


def _feasts(values: list[float | None]) -> list[bytes]:
    """What Feast stores for these values of a Float64 feature."""
    protos = python_values_to_proto_values(values, ValueType.DOUBLE)
    return [p.SerializeToString() for p in protos]


@given(
    st.lists(
        st.lists(FINITE_OR_INFINITE | st.just(math.nan), min_size=3, max_size=3),
        min_size=1,
        max_size=20,
    )
)
@example([EDGES[:3], EDGES[3:6], EDGES[6:]])
@example([[math.nan, 1.0, math.nan]])
def test_rows_are_stored_as_feast_stores_a_float64_feature(rows: list[list[float]]) -> None:
    encoded = encode_rows(np.array(rows, dtype=np.float64))
    assert encoded == [_feasts(list(row)) for row in rows]


@given(st.lists(FINITE_OR_INFINITE | st.none() | st.just(math.nan), min_size=1, max_size=40))
def test_values_read_back_as_feast_wrote_them(values: list[float | None]) -> None:
    """A stored number reads as itself (its sign too); a null, as Feast writes a missing or NaN
    value, reads as None, as does an absent field."""
    read = [decode_value(raw) for raw in _feasts(values)]
    for got, value in zip(read, values, strict=True):
        if value is None or math.isnan(value):
            assert got is None
        else:
            assert got == value and math.copysign(1, got) == math.copysign(1, value)
    assert decode_value(None) is None


def test_row_times_are_protobuf_timestamps_to_the_microsecond() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp.FromString(encode_time(1_795_931_509_123_456))
    assert (stamp.seconds, stamp.nanos) == (1_795_931_509, 123_456_000)
    assert encode_time(0) == Timestamp().SerializeToString() == b""


STORED = st.one_of(
    FINITE_OR_INFINITE.map(lambda v: Value(double_val=v)),
    st.just(Value()),  # a null: Feast's missing or NaN value
    st.integers(-(2**63), 2**63 - 1).map(lambda v: Value(int64_val=v)),
    st.floats(width=32, allow_nan=False).map(lambda v: Value(float_val=v)),
)


@given(st.lists(STORED.map(Value.SerializeToString) | st.none(), max_size=130))
@example([Value(double_val=v).SerializeToString() for v in EDGES])
def test_a_row_decoded_at_once_reads_as_each_value_decoded_alone(raws: list[bytes | None]) -> None:
    """The batch decode equals the library's decode of each value: doubles alone take the
    joined read, and any other stored value (a null, an absent field, another type) the
    message parse, with the same result."""
    at_once = decode_values(raws)
    alone = [decode_value(raw) for raw in raws]
    assert len(at_once) == len(alone)
    for got, expected in zip(at_once, alone, strict=True):
        assert (got is None and expected is None) or (
            got is not None
            and expected is not None
            and struct.pack("<d", got) == struct.pack("<d", expected)
        )


@given(
    st.lists(
        st.lists(FINITE_OR_INFINITE | st.just(math.nan), min_size=4, max_size=4),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.binary(min_size=1, max_size=40), min_size=4, max_size=4),
)
@example([[math.nan] * 4, [1.0, math.nan, -0.0, math.inf]], [b"a", b"bb", b"\r\n", b"x" * 33])
def test_packed_commands_are_the_bytes_redis_py_packs(
    rows: list[list[float]], fields: list[bytes]
) -> None:
    """The stream's Redis writer packs its ``HSET`` commands itself: byte for byte what
    redis-py packs for the same ``hset`` of the rows ``encode_rows`` encodes."""
    matrix = np.array(rows, dtype=np.float64)
    keys = [b"key-%d" % i for i in range(len(rows))]
    times = [encode_time(1_795_931_509_123_456 + i) for i in range(len(rows))]
    tails = [resp_bulk(b"_ts:view") + resp_bulk(t) for t in times]
    packed = hset_commands(keys, fields, matrix, tails)
    connection = redis.Connection()
    for key, values, time, mine in zip(keys, encode_rows(matrix), times, packed, strict=True):
        pairs = [x for pair in zip(fields, values, strict=True) for x in pair]
        expected = b"".join(connection.pack_command("HSET", key, *pairs, b"_ts:view", time))
        assert mine == expected
