"""The offline backfill: the rows the stream would have written, from an archive."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest

from feature_repo.activity import FEATURE_NAMES
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from training.backfill import history
from training.bank.in_memory import generate
from training.bank.spec import BankSpec


@pytest.fixture(scope="module")
def bank():
    return generate(BankSpec(seed=3, customers=250, days=40))


def test_rows_equal_the_plain_recomputation_as_of_each_snapshot(bank) -> None:
    events = [parse_event(e) for e in bank.event_dicts()]
    snapshots = [bank.spec.start + timedelta(days=d) for d in (5, 17, 30, 40)]
    produced = list(history(bank.tables["events"], snapshots))
    assert [moment for moment, _ in produced] == [pd.Timestamp(s) for s in snapshots]
    compared = 0
    for moment, table in produced:
        expected = reference_features([e for e in events if e.occurred_at < moment])
        frame = table.to_pandas()
        assert frame["event_timestamp"].max() < moment
        for row in frame.to_dict("records"):
            as_of, values = expected[row["customer_id"]]
            assert row["event_timestamp"] == pd.Timestamp(as_of)
            for name in FEATURE_NAMES:
                assert row[name] == pytest.approx(values[name], rel=1e-9, abs=1e-9), name
            compared += 1
    assert compared > 500


def test_a_customer_without_new_events_gets_no_new_row(bank) -> None:
    events = bank.tables["events"]
    first = events["occurred_at"][0].as_py()
    cut = pd.Timestamp(first).normalize() + timedelta(days=3)
    # Only events before the cut: the later snapshots see nothing new.
    early = events.filter(pa.compute.less(events["occurred_at"], pa.scalar(cut)))
    produced = list(history(early, [cut, cut + timedelta(days=1), cut + timedelta(days=2)]))
    assert [moment for moment, _ in produced] == [cut]


def test_duplicates_count_once(bank) -> None:
    events = bank.tables["events"]
    doubled = pa.concat_tables([events, events.slice(0, 5000)]).sort_by("occurred_at")
    snapshot = [bank.spec.end]
    (_, once), (_, twice) = (next(history(t, snapshot)) for t in (events, doubled))
    assert once.equals(twice)


def test_snapshots_must_be_midnight_utc(bank) -> None:
    with pytest.raises(ValueError, match="midnight"):
        next(history(bank.tables["events"], [bank.spec.start + timedelta(hours=30)]))


def test_partitions_give_the_same_rows_as_one_table(bank) -> None:
    events = bank.tables["events"]
    day = pa.compute.floor_temporal(events["occurred_at"], unit="day")
    parts = [events.filter(pa.compute.equal(day, d)) for d in pa.compute.unique(day)]
    snapshots = [bank.spec.start + timedelta(days=d) for d in (9, 25, 40)]
    ids = sorted(set(bank.customers["customer_id"]))
    whole = list(history(events, snapshots))
    split = list(history(iter(parts), snapshots, ids))
    assert [m for m, _ in whole] == [m for m, _ in split]
    for (_, a), (_, b) in zip(whole, split, strict=True):
        assert a.sort_by("customer_id").equals(b.sort_by("customer_id"))
