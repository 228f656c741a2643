"""The offline feature history computed from an event archive, without the stream.

The stream worker writes a feature row to the offline store every time it updates a customer
online; that log is what point-in-time training sets are joined from. History that never went
through the stream (an archive of last year's events, a generated bank) gets the same rows from
here: for each snapshot time (the end of a day), every customer whose features changed since the
previous snapshot, by an event or by the calendar, gets one row stamped with the snapshot time,
exact as of it — the row the stream keeps online at that moment (see docs/streaming.md). The
features come from ``features_from_buckets``, the function the stream uses, and a test holds
backfilled rows to the plain recomputation.

The archive is taken as valid (it passed the contract when it was recorded): duplicates by
``event_id`` are dropped, and every event counts, however late it was recorded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_repo.activity import FEATURE_NAMES, MAX_DAYS, VALID_UNTIL
from feature_repo.aggregates import contribution_arrays
from feature_repo.buckets import DAY_US, WindowState, combine_buckets
from feature_repo.windows import features_from_buckets

_CODES = ("type", "direction", "category", "page", "product", "status", "reason")
#: Customers whose features are computed together (bounds the memory of one step).
CUSTOMER_BLOCK = 20_000


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)


class _Buckets:
    """Per (customer, day, measure) sums (or maxima) of an archive, and each customer's latest
    event time per day; fed one partition at a time, so memory follows the buckets, not the
    events. Duplicates are dropped within a partition: an event's partition is its event-time
    day, so a redelivered copy lands in the same one."""

    def __init__(self, customers: Sequence[str] = ()) -> None:
        self.index = pd.Index(pd.unique(np.asarray(customers, dtype=object)))
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._last: list[tuple[np.ndarray, ...]] = []

    def _codes(self, ids: np.ndarray) -> np.ndarray:
        codes: np.ndarray = self.index.get_indexer(ids)
        if (codes < 0).any():
            self.index = self.index.append(pd.Index(pd.unique(ids[codes < 0])))
            codes = self.index.get_indexer(ids)
        return codes.astype(np.int64)

    def add(self, events: pa.Table) -> None:
        if events.num_rows == 0:
            return
        keep = ~events["event_id"].to_pandas().duplicated().to_numpy()
        if not keep.all():
            events = events.filter(pa.array(keep))
        codes = self._codes(_strings(events["customer_id"]))
        # The contract carries whole seconds and cents; so does the stream.
        at = pc.cast(events["occurred_at"], pa.int64()).to_numpy() // 1_000_000 * 1_000_000
        amount = np.round(events["amount"].to_numpy(zero_copy_only=False).astype(float), 2)
        cols = {name: _strings(events[name]) for name in _CODES}
        index, measure, value = contribution_arrays(
            cols["type"],
            amount,
            cols["direction"],
            cols["category"],
            cols["page"],
            cols["product"],
            cols["status"],
            cols["reason"],
        )
        day = at // DAY_US
        # Latest event per (customer, day).
        key = codes * (1 << 20) + (day - day.min())
        order = np.lexsort((at, key))
        ends = np.flatnonzero(np.r_[key[order][1:] != key[order][:-1], True])
        chosen = order[ends]
        self._last.append((codes[chosen], day[chosen], at[chosen]))
        # Buckets per (customer, day, measure).
        self._parts.append(combine_buckets(codes[index], day[index], measure, value))

    def finish(self) -> None:
        """Merge the partitions (a customer-day may span two: sums add, maxima take the max)
        and sort by customer, then day."""
        if not self._parts:
            self._parts.append((np.zeros(0, np.int64),) * 3 + (np.zeros(0),))
            self._last.append((np.zeros(0, np.int64),) * 3)
        customer, day, measure, value = (np.concatenate(c) for c in zip(*self._parts, strict=True))
        self._parts = []
        # A customer-day split over two partitions combines like one.
        self.customer, self.day, self.measure, self.value = combine_buckets(
            customer, day, measure, value
        )
        del customer, day, measure, value
        last_c, last_d, last_at = (np.concatenate(c) for c in zip(*self._last, strict=True))
        self._last = []
        order = np.lexsort((last_d, last_c))
        self.last_customer, self.last_day, self.last_at = (
            last_c[order],
            last_d[order],
            last_at[order],
        )

    def as_of(self, before_us: int) -> np.ndarray:
        """Each customer's latest event time before ``before_us`` (-1: none yet)."""
        latest = np.full(len(self.index), -1, np.int64)
        mask = self.last_at < before_us
        np.maximum.at(latest, self.last_customer[mask], self.last_at[mask])
        return latest


def history(
    events: pa.Table | Iterable[pa.Table],
    snapshots: Sequence[datetime],
    customers: Sequence[str] = (),
) -> Iterator[tuple[pd.Timestamp, pa.Table]]:
    """(snapshot, offline feature rows) per snapshot (the end of a day, UTC: the last
    microsecond before midnight, see ``trainset.snapshot_times``), in time order; snapshots
    where nobody's features changed are left out. ``events``: one table, or partitions (for
    example one per day) of a larger archive."""
    moments = sorted(pd.Timestamp(s) for s in snapshots)
    for moment in moments:
        after = moment + pd.Timedelta(microseconds=1)
        if moment.tzinfo is None or after != after.normalize():
            raise ValueError(f"snapshot {moment} must be the end of a day (UTC), aware")
    buckets = _Buckets(customers)
    for part in [events] if isinstance(events, pa.Table) else events:
        buckets.add(part)
    buckets.finish()
    ids = np.asarray(buckets.index, dtype=object)
    bounds = np.searchsorted(
        buckets.customer, np.arange(0, len(ids) + CUSTOMER_BLOCK, CUSTOMER_BLOCK)
    )
    previous = np.full(len(ids), -1, np.int64)
    was_alive = np.zeros(len(ids), bool)
    for moment in moments:
        at = int(moment.tz_convert("UTC").value // 1_000)
        before = at + 1  # the midnight after the snapshot: events before it count
        as_of = buckets.as_of(before)
        today = at // DAY_US
        # Whose features change with no new event (as the stream's timers see it): a non-zero
        # bucket inside the longest window now, or at the snapshot before.
        inside = (buckets.day <= today) & (buckets.day > today - MAX_DAYS)
        alive = np.zeros(len(ids), bool)
        alive[buckets.customer[inside & (buckets.value != 0)]] = True
        changed = (as_of >= 0) & ((as_of != previous) | alive | was_alive)
        previous, was_alive = as_of, alive
        if not changed.any():
            continue
        # A row is exact as of the snapshot, and holds until the midnight after it while
        # anything is inside the window (inf: until her next event).
        valid_until = np.where(alive, before / 1e6, np.inf)
        blocks = []
        for b in range(len(bounds) - 1):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            first = b * CUSTOMER_BLOCK
            mine = np.flatnonzero(changed[first : first + CUSTOMER_BLOCK]) + first
            if not len(mine):
                continue
            row_of = np.full(CUSTOMER_BLOCK, -1, np.int64)
            row_of[mine - first] = np.arange(len(mine))
            customer = buckets.customer[lo:hi]
            day = buckets.day[lo:hi]
            pick = (day <= today) & (day > today - MAX_DAYS)
            pick &= row_of[customer - first] >= 0
            matrix = features_from_buckets(
                row_of[customer[pick] - first],
                day[pick],
                buckets.measure[lo:hi][pick],
                buckets.value[lo:hi][pick],
                np.full(len(mine), today, np.int64),
            )
            columns: dict[str, pa.Array] = {
                "customer_id": pa.array(ids[mine], pa.string()),
                "event_timestamp": pa.array(
                    np.full(len(mine), at, np.int64), pa.timestamp("us", tz="UTC")
                ),
            }
            for j, name in enumerate(FEATURE_NAMES):
                columns[name] = pa.array(matrix[:, j], pa.float64())
            columns[VALID_UNTIL] = pa.array(valid_until[mine], pa.float64())
            blocks.append(pa.table(columns))
        yield moment, pa.concat_tables(blocks)


def write_history(
    events: pa.Table | Iterable[pa.Table],
    snapshots: Sequence[datetime],
    folder: Path,
    customers: Sequence[str] = (),
) -> int:
    """Write the history into an offline feature folder, one durable part per snapshot;
    returns the number of rows. Parts are named by snapshot, so a rerun replaces them."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    for moment, table in history(events, snapshots, customers):
        name = f"backfill-{moment:%Y%m%d}.parquet"
        temporary = folder / f".{name}.tmp"
        pq.write_table(table, temporary, compression="zstd")
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        temporary.rename(folder / name)
        rows += table.num_rows
    return rows


def window_states(
    events: pa.Table | Iterable[pa.Table],
    cut: datetime,
    lateness_us: int,
    customers: Sequence[str] = (),
) -> dict[str, WindowState]:
    """Each customer's stream state as the stream worker would hold it with its clock at
    ``cut`` (a midnight, UTC), had every event of the archive before ``cut`` gone through it:
    her buckets inside the longest window, her latest event time, the midnight its timers
    last moved her features to, and the ids of her events within the allowed lateness (a
    redelivered one still counts once). Customers with no event before ``cut`` have none.

    For a bank moving onto the stream with an archive: the states continue where the archive
    stops, without publishing it (``service/usecases/stream_seed.py``)."""
    cut_us = round(cut.astimezone(UTC).timestamp() * 1_000_000)
    if cut_us % DAY_US:
        raise ValueError(f"the cut {cut} must be a midnight (UTC)")
    buckets = _Buckets(customers)
    recent: list[tuple[np.ndarray, np.ndarray, pa.ChunkedArray]] = []
    bound = pa.scalar(cut_us, pa.timestamp("us", tz="UTC"))
    for part in [events] if isinstance(events, pa.Table) else events:
        at = pc.cast(part["occurred_at"], pa.timestamp("us", tz="UTC"))
        part = part.filter(pc.less(at, bound))
        buckets.add(part)
        if part.num_rows:
            codes = buckets._codes(_strings(part["customer_id"]))
            times = pc.cast(part["occurred_at"], pa.int64()).to_numpy() // 1_000_000 * 1_000_000
            recent.append((codes, times, part["event_id"]))
    buckets.finish()
    latest = buckets.as_of(cut_us)
    today = cut_us // DAY_US
    # The calendar moves a customer's features each midnight while a non-zero bucket is inside
    # the longest window (``WindowState.next_change_us``): up to the cut, or until it empties.
    last_alive = np.full(len(buckets.index), np.iinfo(np.int64).min // 2, np.int64)
    nonzero = buckets.value != 0
    np.maximum.at(last_alive, buckets.customer[nonzero], buckets.day[nonzero])
    clock_day = np.minimum(today, last_alive + MAX_DAYS)
    seen: dict[int, dict[str, int]] = {}
    for codes, times, ids in recent:
        keep = np.flatnonzero(times >= latest[codes] - lateness_us)
        if not len(keep):
            continue
        kept_ids = ids.take(pa.array(keep)).to_pylist()
        for code, at, event_id in zip(
            codes[keep].tolist(), times[keep].tolist(), kept_ids, strict=True
        ):
            seen.setdefault(code, {})[event_id] = at
    bounds = np.searchsorted(buckets.customer, np.arange(len(buckets.index) + 1))
    states: dict[str, WindowState] = {}
    for code in np.flatnonzero(latest >= 0).tolist():
        as_of = int(latest[code])
        clock = int(clock_day[code]) * DAY_US if clock_day[code] > as_of // DAY_US else None
        row_day = max(as_of, clock or 0) // DAY_US
        lo, hi = int(bounds[code]), int(bounds[code + 1])
        day = buckets.day[lo:hi]
        inside = day > row_day - MAX_DAYS
        states[str(buckets.index[code])] = WindowState(
            as_of_us=as_of,
            days=day[inside].astype(np.int32),
            measures=buckets.measure[lo:hi][inside].astype(np.int8),
            values=buckets.value[lo:hi][inside].astype(np.float64),
            seen=seen.get(code, {}),
            clock_us=clock,
        )
    return states
