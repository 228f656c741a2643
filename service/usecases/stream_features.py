"""A batch's feature step: read the touched customers' states, fold the events in (duplicates and
events later than the allowed lateness change nothing; late ones are counted and logged), write
the states back atomically, then the features online, and buffer them for the offline store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from feature_repo.arrival import Applied, apply_events
from feature_repo.buckets import WindowState
from feature_repo.windows import compute_features
from service.adapters.features.offline import OfflineBuffer
from service.adapters.features.writers import OnlineWriter
from service.adapters.state import StateStore
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
    store.put_many({c: states[c].to_bytes() for c in written})
    ordered = [states[c] for c in written]
    matrix = compute_features(ordered)
    as_of_us = np.fromiter((s.as_of_us for s in ordered), np.int64, len(ordered))
    online.write(written, as_of_us, matrix)
    offline.add(written, as_of_us, matrix)
    return FeaturesWritten(applied, written, as_of_us, origins)
