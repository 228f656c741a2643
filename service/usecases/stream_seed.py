"""The stream seeded from an event archive: every customer's window state, her timer and her
online row, as the stream worker would have left them had the archive gone through it, so the
stream carries on from where the archive stops without publishing it again.

A bank moving onto NextBest has months of events; publishing them through the transport and
the worker only to build the state is slow (every event is parsed, de-duplicated and written
one batch at a time) and floods the offline store with rows a backfill writes a snapshot a day
of. ``training.backfill.window_states`` computes the same states from the archive at once; this
writes them where the worker reads them. Run it with the worker stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from feature_repo.buckets import DAY_US, WindowState
from feature_repo.windows import activity_rows
from service.adapters.features.writers import OnlineWriter
from service.adapters.state import StateStore
from service.adapters.timers import TimerChange, TimerIndex

#: Customers written together (bounds one write to the stores).
SEED_BLOCK = 5_000


@dataclass(frozen=True)
class Seeded:
    customers: int
    #: Customers whose features still change with the calendar (each has a timer).
    timers: int


def seed_stream(
    states: Mapping[str, WindowState],
    store: StateStore,
    timers: TimerIndex,
    online: OnlineWriter,
    partition_of: Callable[[str], int],
) -> Seeded:
    """Write each customer's state, then her timer (under the partition her events arrive on),
    then her online row as of her row time, in that order, as the worker does: a seed
    interrupted part-way is repaired by running it again."""
    customers = sorted(states)
    armed = 0
    for start in range(0, len(customers), SEED_BLOCK):
        block = customers[start : start + SEED_BLOCK]
        ordered = [states[c] for c in block]
        store.put_many({c: s.to_bytes() for c, s in zip(block, ordered, strict=True)})
        changes = [s.next_change_us() for s in ordered]
        timers.apply(
            [
                TimerChange(partition_of(c), c, change, _midnight_after(s))
                for c, s, change in zip(block, ordered, changes, strict=True)
            ]
        )
        armed += sum(change is not None for change in changes)
        as_of_us = np.fromiter((s.row_time_us or 0 for s in ordered), np.int64, len(ordered))
        online.write(block, as_of_us, activity_rows(ordered, changes))
    return Seeded(len(customers), armed)


def _midnight_after(state: WindowState) -> int:
    """What a cancel is computed against: with no next change, any timer up to the midnight
    after her row time is obsolete (as ``stream_features`` cancels)."""
    return ((state.row_time_us or 0) // DAY_US + 1) * DAY_US
