"""A bank's events as records for a live stream, in event-time order with the malformed ones at
their times, paced as fast as possible, at a rate, or at a speed-up of event time
(``speedup=60``: one hour of the bank's life per wall-clock minute)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.bank.contract import contract_events

TimedRecord = tuple[int, str | None, bytes]


def records(events: pa.Table, malformed: pa.Table) -> Iterator[TimedRecord]:
    """(event time in µs, key, value) in event-time order, malformed ones at their times."""
    good = contract_events(events)
    times = pc.cast(events["occurred_at"], pa.int64()).to_pylist()
    bad = list(
        zip(
            pc.cast(malformed["occurred_at"], pa.int64()).to_pylist(),
            malformed["customer_id"].to_pylist(),
            malformed["raw"].to_pylist(),
            strict=True,
        )
    )
    j = 0
    for i, event in enumerate(good):
        while j < len(bad) and bad[j][0] <= times[i]:
            yield bad[j]
            j += 1
        yield times[i], event["customer_id"], json.dumps(event, separators=(",", ":")).encode()
    yield from bad[j:]


def stream_folder(folder: Path) -> Iterator[TimedRecord]:
    """A written bank's events, day by day in event-time order, malformed ones included."""
    malformed = pq.read_table(folder / "malformed.parquet")
    malformed_day = pc.cast(malformed["occurred_at"], pa.int64()).to_numpy() // 86_400_000_000
    for path in sorted((folder / "events").glob("*.parquet")):
        day = pd.Timestamp(path.stem).value // 86_400_000_000_000
        events = pq.read_table(path).sort_by("occurred_at")
        mine = malformed.filter(pa.array(malformed_day == day)).sort_by("occurred_at")
        yield from records(events, mine)


def paced(
    records: Iterable[TimedRecord],
    rate: float | None = None,
    speedup: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[str | None, bytes]]:
    """(key, value) pairs, no faster than ``rate`` per second or ``speedup`` × event time."""
    if rate is not None and speedup is not None:
        raise ValueError("choose a rate or a speed-up, not both")
    if (rate is not None and rate <= 0) or (speedup is not None and speedup <= 0):
        raise ValueError("rate and speed-up must be positive")
    began = clock()
    first_event: int | None = None
    for sent, (at_us, key, value) in enumerate(records):
        if rate is not None:
            due = began + sent / rate
        elif speedup is not None:
            first_event = at_us if first_event is None else first_event
            due = began + (at_us - first_event) / 1e6 / speedup
        else:
            due = began
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        yield key, value
