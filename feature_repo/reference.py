"""The activity features recomputed from a list of events in plain Python, one customer and one
feature at a time, under the same arrival rules: what tests hold the stream and the backfill to."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import numpy as np

from feature_repo.activity import FEATURES, MAX_DAYS, NOT_SEEN_DAYS
from feature_repo.aggregates import IS_MAX, M, contributions
from feature_repo.arrival import DEFAULT_LATENESS_US, epoch_micros
from feature_repo.buckets import DAY_US
from feature_repo.events import Event


def reference_features(
    events: Iterable[Event], lateness_us: int = DEFAULT_LATENESS_US, now: datetime | None = None
) -> dict[str, tuple[datetime, dict[str, float]]]:
    """The same definitions computed the plain way, for checking the stream against:
    ``{customer: (as_of, {feature: value})}``, as of each customer's latest event, or as of
    the day of ``now`` when that is later (what the stream's timers keep online)."""
    moment_us = None if now is None else epoch_micros(now)
    buckets: dict[str, dict[tuple[int, int], float]] = {}
    as_of: dict[str, int] = {}
    seen: dict[str, dict[str, int]] = {}
    for event in events:
        customer = event.customer_id
        mine = seen.setdefault(customer, {})
        at = epoch_micros(event.occurred_at)
        if event.event_id in mine:
            continue
        if customer in as_of and at < as_of[customer] - lateness_us:
            continue
        mine[event.event_id] = at
        as_of[customer] = max(as_of.get(customer, at), at)
        # Ids older than the lateness horizon are forgotten, as in the stream.
        horizon = as_of[customer] - lateness_us
        seen[customer] = {i: t for i, t in mine.items() if t >= horizon}
        bucket = buckets.setdefault(customer, {})
        for measure, value in contributions(event):
            key = (at // DAY_US, measure)
            if IS_MAX[measure]:
                bucket[key] = max(bucket.get(key, value), value)
            else:
                bucket[key] = bucket.get(key, 0.0) + value
    result = {}
    for customer, bucket in buckets.items():
        row_us = as_of[customer]
        if moment_us is not None and moment_us // DAY_US > row_us // DAY_US:
            row_us = moment_us // DAY_US * DAY_US
        moment = datetime.fromtimestamp(row_us / 1e6, UTC)
        result[customer] = (moment, _features(bucket, row_us // DAY_US))
    return result


def _features(bucket: dict[tuple[int, int], float], today: int) -> dict[str, float]:
    """One customer's features as of ``today`` from her buckets ((day, measure): value)."""
    named: dict[str, np.ndarray] = {}
    for feature in FEATURES:
        if feature.kind == "window":
            m, width = M[feature.measure], feature.days or 0  # type: ignore[index]
            inside = [v for (d, mm), v in bucket.items() if mm == m and 0 <= today - d < width]
            value = max(inside, default=0.0) if IS_MAX[m] else sum(inside)
        elif feature.kind == "overdue":
            m = M[feature.measure]  # type: ignore[index]
            days = [
                d for (d, mm), v in bucket.items() if mm == m and v and 0 <= today - d < MAX_DAYS
            ]
            value = float(plain_overdue_days(max(days), today)) if days else 0.0
        elif feature.kind in ("since", "first"):
            m = M[feature.measure]  # type: ignore[index]
            days = [
                d for (d, mm), v in bucket.items() if mm == m and v and 0 <= today - d < MAX_DAYS
            ]
            pick = max if feature.kind == "since" else min
            value = float(today - pick(days)) if days else NOT_SEEN_DAYS
        else:
            value = float(feature.derive(named)[0])  # type: ignore[misc]
        named[feature.name] = np.array([value], dtype=np.float64)
    return {name: float(v[0]) for name, v in named.items()}


def plain_overdue_days(last: int, today: int) -> int:
    """Working days a monthly payment last seen on day ``last`` is overdue on day ``today``,
    counted one calendar day at a time (``activity.overdue_working_days`` says the rule)."""
    epoch = date(1970, 1, 1)
    paid, on = epoch + timedelta(days=last), epoch + timedelta(days=today)
    year, month = (paid.year, paid.month + 1) if paid.month < 12 else (paid.year + 1, 1)
    length = (date(year + month // 12, month % 12 + 1, 1) - date(year, month, 1)).days
    this_length = (date(year, month, 1) - date(paid.year, paid.month, 1)).days
    day = length if paid.day > this_length - 3 else min(paid.day, length)
    expected = date(year, month, day)
    late, moment = 0, expected + timedelta(days=1)
    while moment < on:
        late += moment.weekday() < 5
        moment += timedelta(days=1)
    return late
