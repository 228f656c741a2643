"""Streaming aggregates per customer, defined next to the Feast feature view they feed.

Windows are calendar days in UTC ending on the as-of day: ``inflow_7d`` as of 29 November is the
sum over events that occurred on 23–29 November. The as-of time is the customer's latest event
time. The stream worker keeps per-day buckets per customer and derives every window from them,
and ``batch_features`` recomputes the same definitions from a list of events, so online values
can be checked against a batch recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from feature_repo.events import Event, LoginEvent, PageViewEvent, TransactionEvent

DAY_SECONDS = 86_400
#: Buckets older than the longest window are no longer needed.
MAX_WINDOW_DAYS = 30

PROPERTY_PAGES = frozenset({"mortgage_calculator", "property_listing"})


def _credit(event: Event) -> float | None:
    if isinstance(event, TransactionEvent) and event.payload.direction == "credit":
        return float(event.payload.amount)
    return None


def _debit(event: Event) -> float | None:
    if isinstance(event, TransactionEvent) and event.payload.direction == "debit":
        return float(event.payload.amount)
    return None


def _transaction(event: Event) -> float | None:
    return 1.0 if isinstance(event, TransactionEvent) else None


def _property_view(event: Event) -> float | None:
    if isinstance(event, PageViewEvent) and event.payload.page in PROPERTY_PAGES:
        return 1.0
    return None


def _login(event: Event) -> float | None:
    return 1.0 if isinstance(event, LoginEvent) else None


@dataclass(frozen=True)
class Measure:
    """What one event contributes to a per-day bucket (``None``: nothing) and how it combines."""

    name: str
    value: Callable[[Event], float | None]
    combine: str  # "sum" or "max"


@dataclass(frozen=True)
class Aggregate:
    """A feature: a measure reduced over a window of ``days`` calendar days."""

    name: str
    measure: str
    days: int
    description: str


MEASURES: tuple[Measure, ...] = (
    Measure("inflow", _credit, "sum"),
    Measure("largest_inflow", _credit, "max"),
    Measure("outflow", _debit, "sum"),
    Measure("transactions", _transaction, "sum"),
    Measure("property_views", _property_view, "sum"),
    Measure("logins", _login, "sum"),
)
_MEASURE_INDEX = {m.name: i for i, m in enumerate(MEASURES)}

AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("inflow_7d", "inflow", 7, "money received in the last 7 days"),
    Aggregate("inflow_30d", "inflow", 30, "money received in the last 30 days"),
    Aggregate("largest_inflow_30d", "largest_inflow", 30, "largest single credit in 30 days"),
    Aggregate("outflow_30d", "outflow", 30, "money spent or sent in the last 30 days"),
    Aggregate("transactions_30d", "transactions", 30, "transactions in the last 30 days"),
    Aggregate("property_views_7d", "property_views", 7, "property and mortgage page views, 7 days"),
    Aggregate(
        "property_views_30d", "property_views", 30, "property and mortgage page views, 30 days"
    ),
    Aggregate("logins_7d", "logins", 7, "logins in the last 7 days"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(a.name for a in AGGREGATES)
assert max(a.days for a in AGGREGATES) <= MAX_WINDOW_DAYS


def day_of(moment: datetime) -> int:
    return int(moment.timestamp()) // DAY_SECONDS


@dataclass
class CustomerWindows:
    """One customer's per-day buckets: ``buckets[day][i]`` is measure ``i`` on that day."""

    buckets: dict[int, list[float]] = field(default_factory=dict)
    as_of: datetime | None = None

    def add(self, event: Event) -> None:
        day = day_of(event.occurred_at)
        bucket = self.buckets.get(day)
        if bucket is None:
            bucket = self.buckets[day] = [0.0] * len(MEASURES)
        for i, measure in enumerate(MEASURES):
            value = measure.value(event)
            if value is None:
                continue
            if measure.combine == "sum":
                bucket[i] += value
            else:
                bucket[i] = max(bucket[i], value)
        occurred = event.occurred_at.astimezone(UTC)
        if self.as_of is None or occurred > self.as_of:
            self.as_of = occurred
            self._evict(day_of(occurred))

    def _evict(self, today: int) -> None:
        oldest = today - MAX_WINDOW_DAYS + 1
        for day in [d for d in self.buckets if d < oldest]:
            del self.buckets[day]

    def features(self) -> dict[str, float]:
        if self.as_of is None:
            return dict.fromkeys(FEATURE_NAMES, 0.0)
        today = day_of(self.as_of)
        values: dict[str, float] = {}
        for aggregate in AGGREGATES:
            i = _MEASURE_INDEX[aggregate.measure]
            combine = MEASURES[i].combine
            window = [
                bucket[i] for day, bucket in self.buckets.items() if day > today - aggregate.days
            ]
            if combine == "sum":
                values[aggregate.name] = float(sum(window))
            else:
                values[aggregate.name] = float(max(window, default=0.0))
        return values


def batch_features(events: Iterable[Event]) -> dict[str, tuple[datetime, dict[str, float]]]:
    """Recompute every customer's features from scratch: ``{customer: (as_of, features)}``."""
    by_customer: dict[str, CustomerWindows] = {}
    for event in events:
        by_customer.setdefault(event.customer_id, CustomerWindows()).add(event)
    result = {}
    for customer, windows in by_customer.items():
        assert windows.as_of is not None
        result[customer] = (windows.as_of, windows.features())
    return result
