"""Arrival rules, shared by the stream and the reference recomputation (``feature_repo.reference``):

- an ``event_id`` seen before changes nothing (duplicates and redeliveries);
- an event older than the customer's as-of time minus the allowed lateness is not applied; it is
  counted as *late* (the stream logs it). Within the allowed lateness, out-of-order events count
  exactly as if they had arrived in order. The allowed lateness is also how long event ids are
  remembered: anything older is either late or already counted.

``apply_events`` folds a batch of events into many customers' states (``WindowState``) at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from feature_repo.activity import MAX_DAYS
from feature_repo.aggregates import IS_MAX, N_MEASURES, contributions
from feature_repo.buckets import DAY_US, WindowState, combine_keys
from feature_repo.events import Event

#: Default allowed lateness (and how long event ids are remembered for de-duplication).
DEFAULT_LATENESS_US = 3 * DAY_US


@dataclass
class Applied:
    """What one ``apply_events`` call did with its events."""

    applied: int = 0
    duplicates: int = 0
    late: int = 0
    late_events: list[tuple[str, str, int]] = field(default_factory=list)  # id, customer, µs
    #: Events after the ceiling (the server's clock plus the allowed skew): not applied.
    future: int = 0


def epoch_micros(moment: datetime) -> int:
    """An event time as the stream keeps it: integer microseconds since the epoch."""
    # Exact: epoch microseconds of this era fit a double's 53-bit mantissa.
    return round(moment.timestamp() * 1_000_000)


def apply_events(
    states: dict[str, WindowState],
    events: Iterable[Event],
    lateness_us: int = DEFAULT_LATENESS_US,
    ceiling_us: int | None = None,
) -> Applied:
    """Fold events, in arrival order, into ``states`` (created for new customers).

    ``ceiling_us`` is the latest credible event time (the server's clock plus the allowed
    skew): an event after it is not applied, and lateness is measured against the earlier of
    the customer's latest event time and the ceiling, so a state that a wrong clock once moved
    into the future (before the stream bounded event times) does not turn every real event
    after it into a late one."""
    result = Applied()
    touched: dict[str, int] = {}
    rows: list[int] = []
    days: list[int] = []
    measures: list[int] = []
    values: list[float] = []
    for event in events:
        customer = event.customer_id
        state = states.get(customer)
        if state is None:
            state = states[customer] = WindowState()
        if event.event_id in state.seen:
            result.duplicates += 1
            continue
        at = epoch_micros(event.occurred_at)
        if ceiling_us is not None and at > ceiling_us:
            result.future += 1
            continue
        latest = state.as_of_us
        if latest is not None and ceiling_us is not None and latest > ceiling_us:
            latest = state.as_of_us = ceiling_us  # the future once recorded is not credible
        if latest is not None and at < latest - lateness_us:
            result.late += 1
            result.late_events.append((event.event_id, customer, at))
            continue
        row = touched.setdefault(customer, len(touched))
        day = at // DAY_US
        for measure, value in contributions(event):
            rows.append(row)
            days.append(day)
            measures.append(measure)
            values.append(value)
        state.seen[event.event_id] = at
        if state.as_of_us is None or at > state.as_of_us:
            state.as_of_us = at
        result.applied += 1
    if touched:
        _merge(
            states,
            list(touched),
            np.array(rows, np.int64),
            np.array(days, np.int64),
            np.array(measures, np.int64),
            np.array(values, np.float64),
            lateness_us,
        )
    return result


def _merge(
    states: dict[str, WindowState],
    customers: list[str],
    new_rows: np.ndarray,
    new_days: np.ndarray,
    new_measures: np.ndarray,
    new_values: np.ndarray,
    lateness_us: int,
) -> None:
    """Merge new contributions into the customers' buckets, all customers at once.

    A state's buckets are kept sorted by day, then measure, so a day's few new contributions
    are placed by binary search into the months of buckets already there rather than sorting
    them all again. The sums are taken in the same order as ``combine_buckets`` takes them
    (each bucket's old value first, then its new contributions in arrival order), so the result
    is the same to the last bit."""
    old = [states[c] for c in customers]
    counts = np.fromiter((len(s.days) for s in old), np.int64, len(old))
    rows = np.repeat(np.arange(len(old), dtype=np.int64), counts)
    days = np.concatenate([np.zeros(0, np.int32), *(s.days for s in old)]).astype(np.int64)
    measures = np.concatenate([np.zeros(0, np.int8), *(s.measures for s in old)]).astype(np.int64)
    values = np.concatenate([np.zeros(0), *(s.values for s in old)])
    both = np.concatenate([days, new_days])
    base = int(both.min()) if len(both) else 0
    span = int(both.max()) - base + 1 if len(both) else 1
    keys = (rows * span + (days - base)) * N_MEASURES + measures
    new_keys = (new_rows * span + (new_days - base)) * N_MEASURES + new_measures
    if len(keys) > 1 and not bool((keys[1:] > keys[:-1]).all()):
        # Not in the order this function keeps (a state written some other way): sort it all.
        keys, values = combine_keys(
            np.concatenate([keys, new_keys]), np.concatenate([values, new_values])
        )
        rest = keys // N_MEASURES
        rows, days, measures = rest // span, rest % span + base, keys % N_MEASURES
    else:
        fresh = np.unique(new_keys)
        at = np.searchsorted(keys, fresh)
        missing = np.ones(len(fresh), bool)
        if len(keys):
            missing = (at == len(keys)) | (keys[np.minimum(at, len(keys) - 1)] != fresh)
        added, where = fresh[missing], at[missing]
        # The few new buckets are inserted into each column; only they are decoded from keys.
        rest = added // N_MEASURES
        rows = np.insert(rows, where, rest // span)
        days = np.insert(days, where, rest % span + base)
        measures = np.insert(measures, where, added % N_MEASURES)
        # A new bucket starts where ``combine_buckets`` starts it: 0 for sums, -inf for maxima.
        values = np.insert(values, where, np.where(IS_MAX[added % N_MEASURES], -np.inf, 0.0))
        keys = np.insert(keys, where, added)
        into = np.searchsorted(keys, new_keys)
        is_max = IS_MAX[new_measures]
        np.add.at(values, into[~is_max], new_values[~is_max])
        np.maximum.at(values, into[is_max], new_values[is_max])
    today = np.fromiter((s.row_time_us // DAY_US for s in old), np.int64, len(old))  # type: ignore[operator]
    expired = days <= today[rows] - MAX_DAYS
    if expired.any():
        keep = ~expired
        rows, days, measures, values = rows[keep], days[keep], measures[keep], values[keep]
    u_row, u_day, u_measure = rows, days.astype(np.int32), measures.astype(np.int8)
    bounds = np.searchsorted(u_row, np.arange(len(old) + 1)).tolist()
    for row, state in enumerate(old):
        lo, hi = bounds[row], bounds[row + 1]
        state.days, state.measures, state.values = u_day[lo:hi], u_measure[lo:hi], values[lo:hi]
        # Ids arrive roughly in time order, so the first one is (about) the oldest: prune only
        # when it has fallen behind the lateness horizon.
        horizon = state.as_of_us - lateness_us  # type: ignore[operator]
        if state.seen and next(iter(state.seen.values())) < horizon:
            state.seen = {i: t for i, t in state.seen.items() if t >= horizon}
