"""Timers' part of the window state: features move with the calendar between a customer's
events, exactly as a recomputation as of that day says, and the state knows when they next move."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_repo.activity import FEATURE_NAMES
from feature_repo.arrival import apply_events, epoch_micros
from feature_repo.buckets import DAY_US, WindowState
from feature_repo.events import Event, parse_event
from feature_repo.reference import reference_features
from feature_repo.windows import compute_features

START = datetime(2026, 6, 1, tzinfo=UTC)


def _event(n: int, kind: str, at: datetime) -> Event:
    payloads = {
        "login": ("login", {"method": "password"}),
        "salary": (
            "transaction",
            {"amount": "5000.00", "currency": "CNY", "direction": "credit", "category": "salary"},
        ),
        "property": ("page_view", {"page": "property_listing"}),
    }
    kind_name, payload = payloads[kind]
    return parse_event(
        {
            "event_id": f"e{n}",
            "customer_id": "C1",
            "type": kind_name,
            "occurred_at": at.isoformat(),
            "channel": "mobile_app",
            "payload": payload,
        }
    )


#: A customer's life: events (day, minute of the day, kind) and timer moments (day, minute),
#: in the order they happen to the worker.
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("event"),
            st.integers(0, 200),
            st.integers(0, 1439),
            st.sampled_from(["login", "salary", "property"]),
        ),
        st.tuples(st.just("timer"), st.integers(0, 260), st.integers(0, 1439), st.just("")),
    ),
    min_size=1,
    max_size=25,
)


def _features(state: WindowState) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, compute_features([state])[0].tolist(), strict=True))


@settings(max_examples=150, deadline=None)
@given(steps)
def test_events_and_timers_in_any_order_equal_a_recomputation_as_of_that_day(
    life: list[tuple[str, int, int, str]],
) -> None:
    states: dict[str, WindowState] = {}
    applied: list[Event] = []
    latest_timer: datetime | None = None
    for n, (what, day, minute, kind) in enumerate(life):
        moment = START + timedelta(days=day, minutes=minute)
        if what == "event":
            event = _event(n, kind, moment)
            apply_events(states, [event])
            applied.append(event)
        elif "C1" in states:
            states["C1"].advance_to(epoch_micros(moment))
            latest_timer = moment if latest_timer is None else max(latest_timer, moment)
        if "C1" not in states:
            continue
        # Through bytes, as the worker keeps it between batches.
        states["C1"] = state = WindowState.from_bytes(states["C1"].to_bytes())
        expected = reference_features(applied, now=latest_timer)
        if "C1" not in expected:  # every event so far was late
            continue
        row_time, values = expected["C1"]
        assert state.row_time_us == epoch_micros(row_time)
        got = _features(state)
        assert np.allclose([got[f] for f in FEATURE_NAMES], [values[f] for f in FEATURE_NAMES])


@settings(max_examples=100, deadline=None)
@given(steps, st.integers(1, 400))
def test_features_do_not_change_before_the_next_change_and_never_once_there_is_none(
    life: list[tuple[str, int, int, str]], later_days: int
) -> None:
    states: dict[str, WindowState] = {}
    for n, (what, day, minute, kind) in enumerate(life):
        moment = START + timedelta(days=day, minutes=minute)
        if what == "event":
            apply_events(states, [_event(n, kind, moment)])
        elif "C1" in states:
            states["C1"].advance_to(epoch_micros(moment))
    if "C1" not in states:
        return
    state = states["C1"]
    before = _features(state)
    change = state.next_change_us()
    row = state.row_time_us
    assert row is not None
    if change is None:
        state.advance_to(row + later_days * DAY_US)
        assert _features(state) == before
    else:
        assert change == (row // DAY_US + 1) * DAY_US
        state.advance_to(change - 1)
        assert _features(state) == before
        state.advance_to(change)
        assert state.row_time_us == change


def test_a_state_written_before_timers_reads_back_without_a_clock() -> None:
    states: dict[str, WindowState] = {}
    apply_events(states, [_event(1, "login", START)])
    state = states["C1"]
    # The first version's bytes: as_of, entries, seen ids, then the arrays and ids.
    times = np.array(list(state.seen.values()), np.int64)
    old = b"".join(
        (
            struct.pack("<qII", state.as_of_us, len(state.days), len(state.seen)),
            state.days.astype(np.int32).tobytes(),
            state.measures.astype(np.int8).tobytes(),
            state.values.astype(np.float64).tobytes(),
            times.tobytes(),
            "\n".join(state.seen).encode(),
        )
    )
    again = WindowState.from_bytes(old)
    assert again.clock_us is None and again.as_of_us == state.as_of_us
    assert again.seen == state.seen and _features(again) == _features(state)
