"""The offline backfill: the rows the stream would have written, from an archive, each exact as
of its snapshot (the end of a day)."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest

from feature_repo.activity import FEATURE_NAMES, MAX_DAYS, NOT_SEEN_DAYS, VALID_UNTIL
from feature_repo.arrival import DEFAULT_LATENESS_US, apply_events, epoch_micros
from feature_repo.buckets import WindowState
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from feature_repo.windows import compute_features
from training.backfill import history, window_states
from training.bank.contract import contract_events
from training.bank.in_memory import generate
from training.bank.spec import BankSpec
from training.trainset import END_OF_DAY


@pytest.fixture(scope="module")
def bank():
    return generate(BankSpec(seed=3, customers=250, days=40))


def _ends(bank, days: tuple[int, ...]) -> list[pd.Timestamp]:
    """The ends of these days of the bank (the last microsecond before their midnights)."""
    return [pd.Timestamp(bank.spec.start + timedelta(days=d)) - END_OF_DAY for d in days]


def test_rows_equal_the_plain_recomputation_as_of_each_snapshot(bank) -> None:
    """Every customer with anything inside the windows gets a row at each snapshot, stamped
    with it and exact as of it (her quiet days included), saying until when it holds."""
    events = [parse_event(e) for e in bank.event_dicts()]
    snapshots = _ends(bank, (5, 17, 30, 40, 75))
    produced = list(history(bank.tables["events"], snapshots))
    assert [moment for moment, _ in produced] == snapshots
    compared = 0
    for moment, table in produced:
        expected = reference_features([e for e in events if e.occurred_at <= moment], now=moment)
        frame = table.to_pandas()
        assert (frame["event_timestamp"] == moment).all()
        midnight = (moment + END_OF_DAY).timestamp()
        assert set(frame[VALID_UNTIL]) <= {midnight, math.inf}
        for row in frame.to_dict("records"):
            _row_time, values = expected[row["customer_id"]]
            for name in FEATURE_NAMES:
                assert row[name] == pytest.approx(values[name], rel=1e-9, abs=1e-9), name
            compared += 1
        if moment == snapshots[-1]:  # 35 days after the last event: some windows emptied
            assert (frame[VALID_UNTIL] == midnight).all()
    assert compared > 500


def test_rows_stop_once_nothing_is_inside_the_windows(bank) -> None:
    """A customer with no new event still gets a row at each snapshot while her windows move
    (the calendar changes her features), one more when the last bucket leaves the longest
    window, and none after: that row holds until her next event."""
    events = bank.tables["events"]
    first = events["occurred_at"][0].as_py()
    cut = pd.Timestamp(first).normalize() + timedelta(days=3)
    early = events.filter(pa.compute.less(events["occurred_at"], pa.scalar(cut)))
    ends = [cut + timedelta(days=d) - END_OF_DAY for d in (0, 1, 50, MAX_DAYS + 3, MAX_DAYS + 9)]
    produced = dict(history(early, ends))
    assert sorted(produced) == ends[:4]
    last = produced[ends[3]].to_pandas()
    assert (last[VALID_UNTIL] == math.inf).all()
    assert (last["days_since_login"] == NOT_SEEN_DAYS).all()


def test_duplicates_count_once(bank) -> None:
    events = bank.tables["events"]
    doubled = pa.concat_tables([events, events.slice(0, 5000)]).sort_by("occurred_at")
    snapshot = [pd.Timestamp(bank.spec.end).normalize() - END_OF_DAY]
    (_, once), (_, twice) = (next(history(t, snapshot)) for t in (events, doubled))
    assert once.equals(twice)


def test_snapshots_must_be_ends_of_days_utc(bank) -> None:
    with pytest.raises(ValueError, match="end of a day"):
        next(history(bank.tables["events"], [bank.spec.start + timedelta(hours=30)]))
    with pytest.raises(ValueError, match="end of a day"):
        next(history(bank.tables["events"], [bank.spec.start + timedelta(days=3)]))


def test_partitions_give_the_same_rows_as_one_table(bank) -> None:
    events = bank.tables["events"]
    day = pa.compute.floor_temporal(events["occurred_at"], unit="day")
    parts = [events.filter(pa.compute.equal(day, d)) for d in pa.compute.unique(day)]
    snapshots = _ends(bank, (9, 25, 40))
    ids = sorted(set(bank.customers["customer_id"]))
    whole = list(history(events, snapshots))
    split = list(history(iter(parts), snapshots, ids))
    assert [m for m, _ in whole] == [m for m, _ in split]
    for (_, a), (_, b) in zip(whole, split, strict=True):
        assert a.sort_by("customer_id").equals(b.sort_by("customer_id"))


def _streamed(events, cut, lateness_us):
    """The states the stream worker holds with its clock at ``cut``: every event before it
    folded in arrival order a day at a time, then each customer's timers fired up to ``cut``."""
    states: dict[str, WindowState] = {}
    parsed = sorted((parse_event(e) for e in contract_events(events)), key=lambda e: e.occurred_at)
    for _, day in itertools.groupby(
        (e for e in parsed if e.occurred_at < cut), key=lambda e: e.occurred_at.date()
    ):
        apply_events(states, list(day), lateness_us)
    cut_us = epoch_micros(cut)
    for state in states.values():
        change = state.next_change_us()
        while change is not None and change <= cut_us:
            state.advance_to(change)
            change = state.next_change_us()
    return states


def test_window_states_are_the_streams_states_at_the_cut(bank) -> None:
    """The seeded state of each customer is the one the stream would hold: the same features
    and as-of times, the same next change, and her event ids within the allowed lateness."""
    lateness_us = DEFAULT_LATENESS_US
    for day in (12, 33, 40 + MAX_DAYS // 2, 40 + MAX_DAYS + 2):
        cut = bank.spec.start + timedelta(days=day)
        streamed = _streamed(bank.tables["events"], cut, lateness_us)
        seeded = window_states(bank.tables["events"], cut, lateness_us)
        assert sorted(seeded) == sorted(streamed) and len(seeded) > 100
        ids = sorted(seeded)
        ours = compute_features([seeded[c] for c in ids])
        theirs = compute_features([streamed[c] for c in ids])
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-9)
        for c in ids:
            mine, stream = seeded[c], streamed[c]
            assert (mine.as_of_us, mine.row_time_us) == (stream.as_of_us, stream.row_time_us)
            assert mine.next_change_us() == stream.next_change_us()
            horizon = stream.as_of_us - lateness_us
            assert mine.seen == {i: t for i, t in stream.seen.items() if t >= horizon}
            assert WindowState.from_bytes(mine.to_bytes()).seen == mine.seen


def test_an_event_redelivered_after_the_seed_counts_once(bank) -> None:
    cut = bank.spec.start + timedelta(days=20)
    seeded = window_states(bank.tables["events"], cut, DEFAULT_LATENESS_US)
    before = [e for e in map(parse_event, bank.event_dicts()) if e.occurred_at < cut]
    again = apply_events(seeded, before[-50:], DEFAULT_LATENESS_US)
    assert (again.applied, again.duplicates) == (0, 50)


def test_the_cut_must_be_a_midnight(bank) -> None:
    with pytest.raises(ValueError, match="midnight"):
        window_states(bank.tables["events"], bank.spec.start + timedelta(hours=30), 1)
