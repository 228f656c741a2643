"""A batch's feature step: read the touched customers' states, fold the events in (duplicates and
events later than the allowed lateness change nothing; late ones are counted and logged), write
the states back atomically, then the features online, and buffer them for the offline store.

Timers due (``advance_features``) go the same way: the customers' states are moved through the
midnights up to their partition's watermark, and written back, online and offline like an
event's. Either way each customer's next change becomes her timer (``TimerChange``), for the
worker to store once the offline rows are durable."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from feature_repo.arrival import Applied, apply_events
from feature_repo.buckets import DAY_US, WindowState
from feature_repo.windows import activity_rows
from service.adapters.features.offline import OfflineBuffer
from service.adapters.features.writers import OnlineWriter
from service.adapters.state import HoldingStates, StateStore
from service.adapters.timers import Timer, TimerChange
from service.usecases.origin import Origin
from service.usecases.stream_validation import Parsed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesWritten:
    """What a feature step did: its events' fate, the customers whose features it wrote (with
    their as-of times, in epoch microseconds) and, per customer, the event that last changed
    them."""

    applied: Applied
    customers: list[str]
    as_of_us: np.ndarray
    origins: dict[str, Origin]
    #: Each written customer's next change, under the partition of her latest event.
    timers: list[TimerChange]


def write_features(
    items: list[Parsed],
    store: StateStore,
    online: OnlineWriter,
    offline: OfflineBuffer,
    lateness_us: int,
    ahead: timedelta,
) -> FeaturesWritten:
    """Apply ``items`` under the arrival rules and write what changed; events dated more than
    ``ahead`` after the server's clock are not applied."""
    events = [p.event for p in items]
    origins = {
        p.event.customer_id: Origin(
            p.event.event_id, p.record.topic, p.record.partition, p.record.offset
        )
        for p in items
    }
    customers = list(dict.fromkeys(e.customer_id for e in events))
    blobs = store.get_many(customers)
    states = {
        c: WindowState.from_bytes(b) if b is not None else WindowState()
        for c, b in zip(customers, blobs, strict=True)
    }
    ceiling = datetime.now(UTC) + ahead
    applied = apply_events(states, events, lateness_us, round(ceiling.timestamp() * 1_000_000))
    if applied.late_events:
        first = applied.late_events[0]
        log.warning(
            "%d event(s) later than the allowed lateness were not applied (first: %s of %s)",
            applied.late,
            first[0],
            first[1],
        )
    written = [c for c in customers if states[c].as_of_us is not None]
    changes = [states[c].next_change_us() for c in written]
    as_of_us = _write_rows(written, states, changes, store, online, offline)
    timers = [
        _next_timer(origins[c].partition, c, states[c], change)
        for c, change in zip(written, changes, strict=True)
    ]
    return FeaturesWritten(applied, written, as_of_us, origins, timers)


@dataclass(frozen=True)
class TimersFired:
    """What a round of timers did: the customers whose features it moved (with their new row
    times), and the timers to store."""

    customers: list[str]
    as_of_us: np.ndarray
    timers: list[TimerChange]


def advance_features(
    due: list[Timer],
    upto: dict[int, int],
    store: HoldingStates,
    online: OnlineWriter,
    offline: OfflineBuffer,
) -> TimersFired:
    """Move the customers of ``due`` timers through every midnight their features change at,
    up to their partition's watermark (``upto``, epoch µs): a row per midnight goes to the
    offline buffer, the last one online too. A timer whose customer has no state (erased) or
    whose features no longer change is cancelled.

    Firing a timer again (its change was not stored before a crash) writes the customer's
    current row again, as a redelivered event does. The rows of the midnights before it would
    be lost with the buffer, so the states of customers moved through more than one midnight
    are held (``HoldingStates``) until the worker has made the buffer durable."""
    customers = list(dict.fromkeys(t.customer for t in due))
    blobs = store.get_many(customers)
    states = {c: WindowState.from_bytes(b) for c, b in zip(customers, blobs, strict=True) if b}
    until = {t.customer: upto[t.partition] for t in due}
    written = [c for c in customers if c in states and states[c].as_of_us is not None]
    nexts = {c: states[c].next_change_us() for c in written}
    stepping = [c for c in written if _due_by(nexts[c], until[c])]
    several: set[str] = set()
    while stepping:
        for customer in stepping:
            states[customer].advance_to(nexts[customer] or 0)
            nexts[customer] = states[customer].next_change_us()
        stepping = [c for c in stepping if _due_by(nexts[c], until[c])]
        if stepping:  # a midnight before the last: offline only
            several.update(stepping)
            ordered = [states[c] for c in stepping]
            moments = np.fromiter((s.row_time_us for s in ordered), np.int64, len(ordered))
            offline.add(stepping, moments, activity_rows(ordered, [nexts[c] for c in stepping]))
    store.hold_many({c: states[c].to_bytes() for c in several})
    as_of_us = _write_rows(written, states, [nexts[c] for c in written], store, online, offline)
    timers = [TimerChange(t.partition, t.customer, nexts.get(t.customer), t.due_us) for t in due]
    return TimersFired(written, as_of_us, timers)


def _write_rows(
    written: list[str],
    states: dict[str, WindowState],
    changes: list[int | None],
    store: StateStore,
    online: OnlineWriter,
    offline: OfflineBuffer,
) -> np.ndarray:
    """Write the customers' states back (atomically), then their rows online and to the offline
    buffer, each as of its row time (returned, epoch µs) and holding until its next change
    (``changes``, in ``written``'s order)."""
    store.put_many({c: states[c].to_bytes() for c in written})
    ordered = [states[c] for c in written]
    matrix = activity_rows(ordered, changes)
    as_of_us = np.fromiter((s.row_time_us for s in ordered), np.int64, len(ordered))
    online.write(written, as_of_us, matrix)
    offline.add(written, as_of_us, matrix)
    return as_of_us


def _due_by(change: int | None, moment_us: int) -> bool:
    return change is not None and change <= moment_us


def _next_timer(
    partition: int, customer: str, state: WindowState, change: int | None
) -> TimerChange:
    row = state.row_time_us or 0
    # With no next change, any timer up to the midnight after her row time is obsolete.
    return TimerChange(partition, customer, change, (row // DAY_US + 1) * DAY_US)
