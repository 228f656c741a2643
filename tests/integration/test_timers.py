"""The timer index and the watermarks on both stores (SQLite, real Redis): timers move only
later, a stale cancel leaves a newer timer, rounds are earliest first and bounded; and the
worker's timers bring quiet customers' rows to today, through restarts."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from feature_repo.activity import FEATURE_NAMES, VALID_UNTIL
from feature_repo.buckets import DAY_US
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from service.adapters.timers import (
    RedisTimerIndex,
    RedisWatermarks,
    SQLiteTimerIndex,
    SQLiteWatermarks,
    TimerChange,
    TimerIndex,
    WatermarkStore,
)
from service.usecases import pipeline
from service.usecases.erasure import erase_customer
from service.usecases.stream_timers import MIN_ROUND
from training.bank.in_memory import generate
from training.bank.spec import BankSpec


@pytest.fixture(params=["sqlite", "redis"])
def stores(request, tmp_path: Path) -> Iterator[tuple[TimerIndex, WatermarkStore]]:
    if request.param == "sqlite":
        index: TimerIndex = SQLiteTimerIndex(tmp_path / "timers.db")
        marks: WatermarkStore = SQLiteWatermarks(tmp_path / "timers.db")
    else:
        url = request.getfixturevalue("redis_url")
        namespace = f"t{uuid.uuid4().hex[:8]}"
        index, marks = RedisTimerIndex(url, namespace), RedisWatermarks(url, namespace)
    yield index, marks
    index.clear()
    index.close()
    marks.close()


def test_a_timer_only_moves_later_and_a_stale_cancel_leaves_a_newer_one(stores) -> None:
    index, _ = stores
    index.apply([TimerChange(0, "A", 2 * DAY_US), TimerChange(0, "B", 3 * DAY_US)])
    index.apply([TimerChange(0, "A", 1 * DAY_US)])  # earlier: ignored
    assert [(t.customer, t.due_us) for t in index.due({0: 10 * DAY_US}, 10)] == [
        ("A", 2 * DAY_US),
        ("B", 3 * DAY_US),
    ]
    # A cancel computed when A's timer was at day 1 does not remove her day-2 timer...
    index.apply([TimerChange(0, "A", None, 1 * DAY_US)])
    assert {t.customer for t in index.due({0: 10 * DAY_US}, 10)} == {"A", "B"}
    # ...one computed at day 2 does.
    index.apply([TimerChange(0, "A", None, 2 * DAY_US)])
    assert [t.customer for t in index.due({0: 10 * DAY_US}, 10)] == ["B"]
    assert index.count([0]) == 1
    index.apply([TimerChange(3, "B", 4 * DAY_US)])
    index.delete("B")  # her erasure: every partition
    assert index.count([0, 1, 2, 3]) == 0


def test_rounds_are_per_partition_earliest_first_and_bounded(stores) -> None:
    index, _ = stores
    index.apply(
        [TimerChange(p, f"C{p}-{i}", (10 - i) * DAY_US + p) for p in (0, 1) for i in range(10)]
    )
    due = index.due({0: 5 * DAY_US, 1: 8 * DAY_US}, 4)
    assert [t.due_us for t in due] == sorted(t.due_us for t in due)
    assert len(due) == 4 and due[0].due_us == 1 * DAY_US
    assert all(t.due_us <= (5 if t.partition == 0 else 8) * DAY_US for t in due)
    assert index.due({2: 100 * DAY_US}, 10) == [] and index.due({}, 10) == []
    assert index.count([0, 1]) == 20


def test_a_partitions_customers_are_paged_through_once_each(stores) -> None:
    index, _ = stores
    index.apply([TimerChange(0, f"P{i:02d}", (i + 1) * DAY_US) for i in range(25)])
    index.apply([TimerChange(1, "OTHER", DAY_US)])
    seen: list[str] = []
    cursor = 0
    while True:
        cursor, page = index.customers(0, cursor, 10)
        seen += page
        if cursor == 0:
            break
    assert sorted(seen) == [f"P{i:02d}" for i in range(25)]
    assert index.customers(2, 0, 10) == (0, [])


def test_watermarks_are_published_per_partition(stores) -> None:
    _, marks = stores
    assert marks.read() == {}
    marks.publish({0: 5, 1: 7})
    marks.publish({1: 9})
    assert marks.read() == {0: 5, 1: 9}


def test_quiet_customers_rows_follow_the_calendar_through_worker_restarts(embedded) -> None:
    """Days pass with no event: each run of the worker brings every row to that day, exact as
    a recomputation says, with until when it holds; once nothing is inside the longest window,
    no timer is left and the rows say they hold until the next event."""
    bank = generate(BankSpec(seed=5, customers=40, days=20))
    events = bank.event_dicts()
    pipeline.publish_events(embedded, events)
    parsed = [parse_event(e) for e in events]
    end = bank.spec.end
    for run, later in enumerate((timedelta(hours=30), timedelta(days=3, hours=2), timedelta(45))):
        now = end + later
        clock = round(now.timestamp() * 1e6)
        _tick(embedded, run)
        pipeline.stream_until_idle(embedded, idle_s=0.2, clock=_fixed(clock))
        expected = reference_features(parsed, now=now)
        for customer, (row_time, values) in expected.items():
            if customer == TICKER:
                continue
            online = embedded.features.read(customer)
            assert online.as_of == row_time
            assert {n: online.values[n] for n in FEATURE_NAMES} == pytest.approx(values)
            tomorrow = (now.timestamp() // 86_400 + 1) * 86_400
            assert online.valid_until == tomorrow
    now = end + timedelta(days=200)
    clock = round(now.timestamp() * 1e6)
    _tick(embedded, 3)
    stats = pipeline.stream_until_idle(embedded, idle_s=0.2, clock=lambda: clock)
    assert stats.timers_fired == len({e["customer_id"] for e in events}) + 1
    assert embedded.timer_index().count([0]) == 0
    for customer, (_row_time, values) in reference_features(parsed, now=now).items():
        online = embedded.features.read(customer)
        assert online.valid_until == float("inf")
        assert {n: online.values[n] for n in FEATURE_NAMES} == pytest.approx(values)
        # The row is exact however long she stays quiet: never stale on that account, only
        # when the stream is behind.
        much_later = now + timedelta(days=300)
        assert replace(online, watermark=much_later).fresh(much_later)[1] == frozenset()
        assert replace(online, watermark=now).fresh(much_later)[1] != frozenset()


def _fixed(clock_us: int) -> Callable[[], int]:
    """A simulated clock standing at ``clock_us``."""
    return lambda: clock_us


#: A customer with one event per worker run, so that each run starts on a record (a run with
#: nothing to read waits for its consumer group first).
TICKER = "TICK"


def _login(customer: str, at: datetime, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or f"e-{customer}",
        "customer_id": customer,
        "type": "login",
        "occurred_at": at.isoformat(),
        "channel": "mobile_app",
        "payload": {"method": "password"},
    }


def _tick(container, run: int) -> None:
    at = datetime(2026, 10, 1, tzinfo=UTC)
    pipeline.publish_events(container, [_login(TICKER, at, f"tick-{run}")])


def test_the_offline_history_holds_a_row_per_midnight_exact_as_of_it(embedded) -> None:
    bank = generate(BankSpec(seed=6, customers=15, days=10))
    events = bank.event_dicts()
    pipeline.publish_events(embedded, events)
    now = bank.spec.end + timedelta(days=6, hours=5)
    clock = round(now.timestamp() * 1e6)
    pipeline.stream_until_idle(embedded, idle_s=0.2, clock=lambda: clock)
    _assert_a_row_per_midnight(embedded, events, bank.spec.end, days=6)


def _assert_a_row_per_midnight(container, events, end: datetime, days: int) -> None:
    """The offline history holds, for each of the ``days`` midnights after ``end``, one row per
    customer, exact as of it (rows written again after a crash are the same row)."""
    import pyarrow.dataset as ds

    folder = container.store_location.offline_dir / "customer_activity"
    rows = ds.dataset(str(folder), format="parquet").to_table().to_pandas()
    parsed = [parse_event(e) for e in events]
    midnight = datetime.fromtimestamp(end.timestamp() // 86_400 * 86_400, UTC)
    for day in range(1, days + 1):
        moment = midnight + timedelta(days=day)
        expected = reference_features(parsed, now=moment)
        at = rows[(rows["event_timestamp"] == moment) & (rows["customer_id"] != TICKER)]
        at = at.drop_duplicates("customer_id")
        assert set(at["customer_id"]) == set(expected), moment
        for _, row in at.iterrows():
            values = expected[row["customer_id"]][1]
            assert row[VALID_UNTIL] == (moment + timedelta(days=1)).timestamp()
            assert {n: row[n] for n in FEATURE_NAMES} == pytest.approx(
                {n: values[n] for n in FEATURE_NAMES}
            )


def test_an_erased_customers_timers_go_with_her(embedded) -> None:
    at = datetime(2026, 11, 30, 9, tzinfo=UTC)
    pipeline.publish_events(embedded, [_login(who, at) for who in ("GONE", "KEPT")])
    clock = round((at + timedelta(hours=2)).timestamp() * 1e6)
    pipeline.stream_until_idle(embedded, idle_s=0.2, clock=lambda: clock)
    index = embedded.timer_index()
    tomorrow = round((at + timedelta(days=1)).timestamp() * 1e6)
    assert {t.customer for t in index.due({0: tomorrow}, 10)} == {"GONE", "KEPT"}
    erase_customer(embedded, "GONE", "test")
    assert {t.customer for t in index.due({0: tomorrow}, 10)} == {"KEPT"}


def test_a_customer_whose_state_cannot_be_advanced_does_not_stop_the_others(embedded) -> None:
    at = datetime(2026, 11, 30, 9, tzinfo=UTC)
    pipeline.publish_events(embedded, [_login(who, at) for who in ("BROKEN", "FINE1", "FINE2")])
    first = round((at + timedelta(hours=2)).timestamp() * 1e6)
    pipeline.stream_until_idle(embedded, idle_s=0.2, clock=lambda: first)
    states = embedded.state_store()
    states.put_many({"BROKEN": b"\x00not a state"})
    _tick(embedded, 0)
    later = at + timedelta(days=2)
    clock = round(later.timestamp() * 1e6)
    stats = pipeline.stream_until_idle(embedded, idle_s=0.2, clock=lambda: clock)
    assert stats.timers_fired >= 2
    midnight = datetime(2026, 12, 2, tzinfo=UTC)
    for customer in ("FINE1", "FINE2"):
        assert embedded.features.read(customer).as_of == midnight
    # Hers is tried again at the next midnight, once, not lost.
    [timer] = [
        t for t in embedded.timer_index().due({0: clock + 5 * DAY_US}, 10) if t.customer == "BROKEN"
    ]
    assert timer.due_us == round(datetime(2026, 12, 3, tzinfo=UTC).timestamp() * 1e6)


def test_a_crash_after_timers_moved_customers_through_midnights_loses_no_row(embedded) -> None:
    """A round moves each customer through six midnights, a row each, and the worker dies
    before its next flush: her state was held back with those rows, so the next run fires the
    same timers again and the offline history has every midnight's row, exact."""
    bank = generate(BankSpec(seed=6, customers=15, days=10))
    events = bank.event_dicts()
    pipeline.publish_events(embedded, events)
    end = round((bank.spec.end + timedelta(hours=1)).timestamp() * 1e6)
    pipeline.stream_until_idle(embedded, idle_s=0.2, clock=_fixed(end))
    customers = sorted({e["customer_id"] for e in events})
    before = embedded.state_store().get_many(customers)

    now = bank.spec.end + timedelta(days=6, hours=5)
    clock = round(now.timestamp() * 1e6)
    worker = embedded.worker(clock=_fixed(clock))
    assert worker.timers is not None
    worker.timers.caught_up(worker.consumer.partitions())
    fired = worker.fire_timers(force=True)
    assert fired >= len(customers)
    # Killed here: nothing flushed, and no state moved on without its rows.
    assert worker.offline.rows > 0
    worker.consumer.close()
    assert embedded.state_store().get_many(customers) == before

    _tick(embedded, 0)
    pipeline.stream_until_idle(embedded, idle_s=0.2, clock=_fixed(clock))
    _assert_a_row_per_midnight(embedded, events, bank.spec.end, days=6)


def test_a_round_fits_the_time_given_and_the_next_rounds_take_the_rest(embedded) -> None:
    """With no time to spare (records waiting), one small round fires and the others wait for
    the next loop; given time, they all fire."""
    at = datetime(2026, 11, 30, 9, tzinfo=UTC)
    pipeline.publish_events(embedded, [_login(f"R{i:03d}", at) for i in range(60)])
    pipeline.stream_until_idle(embedded, idle_s=0.2, clock=_fixed(round(at.timestamp() * 1e6)))
    later = round((at + timedelta(days=2)).timestamp() * 1e6)
    worker = embedded.worker(clock=_fixed(later))
    try:
        assert worker.timers is not None
        worker.timers.caught_up(worker.consumer.partitions())
        assert worker.fire_timers(force=True, budget_s=0.0) == MIN_ROUND
        assert worker.fire_timers(force=True) == 60 - MIN_ROUND
        assert worker.fire_timers(force=True) == 0
        worker.flush_and_commit()
    finally:
        worker.close()
    assert embedded.features.read("R059").as_of == datetime(2026, 12, 2, tzinfo=UTC)
