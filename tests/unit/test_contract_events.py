"""A bank's events table read as contract events: the columns are converted as a whole (event
times to the contract's text, dictionary columns decoded at once), and what comes out is what
converting each value on its own gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from training.bank.contract import _iso, _values

MOMENTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(st.lists(MOMENTS, max_size=50))
def test_event_times_are_written_to_the_second_as_each_ones_strftime(
    moments: list[datetime],
) -> None:
    column = pa.chunked_array([pa.array(moments, pa.timestamp("us", tz="UTC"))])
    assert _iso(column) == [m.strftime("%Y-%m-%dT%H:%M:%SZ") for m in moments]


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "ü", ""])), max_size=50))
def test_dictionary_columns_decode_to_each_values_own(values: list[str | None]) -> None:
    encoded = pa.chunked_array([pa.array(values, pa.string()).dictionary_encode()])
    assert pa.types.is_dictionary(encoded.type)
    assert _values(encoded) == values


def test_a_time_just_before_a_second_stays_in_it() -> None:
    moment = datetime(2026, 12, 7, 23, 59, 59, 999_999, tzinfo=UTC)
    column = pa.chunked_array([pa.array([moment, moment + timedelta(microseconds=1)])])
    assert _iso(column) == ["2026-12-07T23:59:59Z", "2026-12-08T00:00:00Z"]
