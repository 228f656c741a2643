"""Streaming aggregates per customer, defined next to the Feast feature view they feed.

**Measures** are what one event contributes to a customer's per-day buckets (money in by
category, page views by topic, applications by need, ...). **Features** reduce a measure over a
window of calendar days in UTC ending on the as-of day (1, 7, 30, 60 or 90 days; ``inflow_7d`` as
of 29 November covers 23–29 November), count days since a measure was last seen, or combine
other features (ratios, changes, applications in flight). The as-of time is the customer's
latest event time.

Arrival rules, shared by the stream and the reference recomputation:

- an ``event_id`` seen before changes nothing (duplicates and redeliveries);
- an event older than the customer's as-of time minus the allowed lateness is not applied; it is
  counted as *late* (the stream logs it). Within the allowed lateness, out-of-order events count
  exactly as if they had arrived in order. The allowed lateness is also how long event ids are
  remembered: anything older is either late or already counted.

``WindowState`` is one customer's state, ``apply_events`` folds a batch of events into many states
at once, ``compute_features`` turns states into feature rows, vectorised across customers.
``reference_features`` recomputes everything from a list of events in plain Python, for tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import numpy as np

from consent.rules.vocabulary import NEEDS
from feature_repo.events import (
    ApplicationEvent,
    ContactEvent,
    Event,
    LoginEvent,
    PageViewEvent,
    ProductClosedEvent,
    ProductOpenedEvent,
    ProfileUpdateEvent,
    TransactionEvent,
)

DAY_US = 86_400 * 1_000_000
#: Longest window; buckets older than this are evicted.
MAX_DAYS = 90
#: Default allowed lateness (and how long event ids are remembered for de-duplication).
DEFAULT_LATENESS_US = 3 * DAY_US
#: ``days_since_*`` when the measure has not been seen in the longest window.
NOT_SEEN_DAYS = float(MAX_DAYS + 1)

# --- measures -------------------------------------------------------------------------------
_MEASURES: list[tuple[str, str]] = [
    ("inflow", "sum"),
    ("largest_inflow", "max"),
    ("salary", "sum"),
    ("salary_count", "sum"),
    ("transfer_in", "sum"),
    ("outflow", "sum"),
    ("card_spend", "sum"),
    ("card_count", "sum"),
    ("transfer_out", "sum"),
    ("housing", "sum"),
    ("fees", "sum"),
    ("investment_buy", "sum"),
    ("transactions", "sum"),
    ("property_views", "sum"),
    ("mortgage_calculator_views", "sum"),
    ("investment_views", "sum"),
    ("insurance_views", "sum"),
    ("card_offer_views", "sum"),
    ("loan_views", "sum"),
    ("pension_views", "sum"),
    ("deposit_views", "sum"),
    ("page_views", "sum"),
    ("logins", "sum"),
    *((f"applied_{need}", "sum") for need in NEEDS),
    *((f"decided_{need}", "sum") for need in NEEDS),
    ("complaints", "sum"),
    ("contacts", "sum"),
    ("profile_updates", "sum"),
    ("products_opened", "sum"),
    ("products_closed", "sum"),
    # Appended, never inserted: persisted window states refer to measures by position.
    ("fee_count", "sum"),
    ("transfer_out_count", "sum"),
]
MEASURE_NAMES = tuple(name for name, _ in _MEASURES)
M = {name: i for i, name in enumerate(MEASURE_NAMES)}
IS_MAX = np.array([combine == "max" for _, combine in _MEASURES])
N_MEASURES = len(MEASURE_NAMES)

#: Debit measures that count transactions rather than sum their amounts.
_COUNTS = frozenset({"card_count", "fee_count", "transfer_out_count"})
_PAGE_MEASURES = {
    "property_listing": ("property_views",),
    "mortgage_calculator": ("property_views", "mortgage_calculator_views"),
    "fund_detail": ("investment_views",),
    "insurance_quote": ("insurance_views",),
    "card_offer": ("card_offer_views",),
    "loan_calculator": ("loan_views",),
    "pension_info": ("pension_views",),
    "deposit_rates": ("deposit_views",),
}
_DEBIT_MEASURES = {
    "card_purchase": ("card_spend", "card_count"),
    "transfer_out": ("transfer_out", "transfer_out_count"),
    "rent": ("housing",),
    "mortgage_payment": ("housing",),
    "fee": ("fees", "fee_count"),
    "investment_buy": ("investment_buy",),
}


def contributions(event: Event) -> list[tuple[int, float]]:
    """(measure, value) pairs one event adds to its day's bucket."""
    if isinstance(event, TransactionEvent):
        return _transaction_contributions(event)
    if isinstance(event, PageViewEvent):
        return [(M["page_views"], 1.0)] + [
            (M[name], 1.0) for name in _PAGE_MEASURES.get(event.payload.page, ())
        ]
    if isinstance(event, LoginEvent):
        return [(M["logins"], 1.0)]
    if isinstance(event, ApplicationEvent):
        return _application_contributions(event)
    if isinstance(event, ContactEvent):
        out = [(M["contacts"], 1.0)]
        if event.payload.reason == "complaint":
            out.append((M["complaints"], 1.0))
        return out
    if isinstance(event, ProfileUpdateEvent):
        return [(M["profile_updates"], 1.0)]
    if isinstance(event, ProductOpenedEvent):
        return [(M["products_opened"], 1.0)]
    if isinstance(event, ProductClosedEvent):
        return [(M["products_closed"], 1.0)]
    return []


def _transaction_contributions(event: TransactionEvent) -> list[tuple[int, float]]:
    amount = float(event.payload.amount)
    out = [(M["transactions"], 1.0)]
    if event.payload.direction != "credit":
        out.append((M["outflow"], amount))
        for name in _DEBIT_MEASURES.get(event.payload.category, ()):
            out.append((M[name], 1.0 if name in _COUNTS else amount))
        return out
    out += [(M["inflow"], amount), (M["largest_inflow"], amount)]
    if event.payload.category == "salary":
        out += [(M["salary"], amount), (M["salary_count"], 1.0)]
    elif event.payload.category == "transfer_in":
        out.append((M["transfer_in"], amount))
    return out


def _application_contributions(event: ApplicationEvent) -> list[tuple[int, float]]:
    product = event.payload.product
    if product not in NEEDS:
        return []
    if event.payload.status == "submitted":
        return [(M[f"applied_{product}"], 1.0)]
    if event.payload.status in ("approved", "declined"):
        return [(M[f"decided_{product}"], 1.0)]
    return []


def contribution_arrays(
    kind: np.ndarray,
    amount: np.ndarray,
    direction: np.ndarray,
    category: np.ndarray,
    page: np.ndarray,
    product: np.ndarray,
    status: np.ndarray,
    reason: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``contributions`` for many events at once, from their columns (object arrays of strings,
    ``None`` where a field does not apply; ``amount`` as float, already in the contract's cents):
    (event index, measure, value) triples, in no particular order. Same mapping tables, same
    answers: a test holds the two to each other."""
    parts: list[tuple[np.ndarray, int, np.ndarray | float]] = []

    def add(mask: np.ndarray, measure: str, value: np.ndarray | float = 1.0) -> None:
        if mask.any():
            index = np.flatnonzero(mask)
            parts.append(
                (index, M[measure], value[index] if isinstance(value, np.ndarray) else value)
            )

    txn = kind == "transaction"
    credit = txn & (direction == "credit")
    debit = txn & ~(direction == "credit")
    add(txn, "transactions")
    add(credit, "inflow", amount)
    add(credit, "largest_inflow", amount)
    add(credit & (category == "salary"), "salary", amount)
    add(credit & (category == "salary"), "salary_count")
    add(credit & (category == "transfer_in"), "transfer_in", amount)
    add(debit, "outflow", amount)
    for name, measures in _DEBIT_MEASURES.items():
        for measure in measures:
            add(debit & (category == name), measure, 1.0 if measure in _COUNTS else amount)
    viewed = kind == "page_view"
    add(viewed, "page_views")
    for name, measures in _PAGE_MEASURES.items():
        for measure in measures:
            add(viewed & (page == name), measure)
    add(kind == "login", "logins")
    applied = kind == "application"
    for need in NEEDS:
        mine = applied & (product == need)
        add(mine & (status == "submitted"), f"applied_{need}")
        add(mine & ((status == "approved") | (status == "declined")), f"decided_{need}")
    contact = kind == "contact"
    add(contact, "contacts")
    add(contact & (reason == "complaint"), "complaints")
    add(kind == "profile_update", "profile_updates")
    add(kind == "product_opened", "products_opened")
    add(kind == "product_closed", "products_closed")
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    index = np.concatenate([p[0] for p in parts])
    measure_ids = np.concatenate([np.full(len(p[0]), p[1], np.int64) for p in parts])
    value = np.concatenate(
        [np.broadcast_to(np.asarray(p[2], np.float64), len(p[0])) for p in parts]
    )
    return index, measure_ids, value


# --- features -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    measure: str | None = None
    days: int | None = None
    #: "window" (sum or max of the measure), "since" (days since last seen), "first" (days
    #: since first seen in the longest window: how long an interest has lasted) or "derived".
    kind: str = "window"
    derive: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None


#: Page-view measures by topic, with what one of them is.
_TOPIC_VIEWS = (
    ("property_views", "property or mortgage page view"),
    ("investment_views", "fund page view"),
    ("insurance_views", "insurance quote view"),
    ("card_offer_views", "card offer view"),
    ("loan_views", "loan calculator view"),
    ("pension_views", "pension page view"),
    ("deposit_views", "deposit rates view"),
)


def _w(measure: str, days: int, what: str) -> Feature:
    return Feature(f"{measure}_{days}d", f"{what}, last {days} days", measure, days)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _in_flight(values: dict[str, np.ndarray], need: str) -> np.ndarray:
    return np.maximum(values[f"applied_{need}_90d"] - values[f"decided_{need}_90d"], 0.0)


FEATURES: tuple[Feature, ...] = (
    _w("inflow", 1, "money received"),
    _w("inflow", 7, "money received"),
    _w("inflow", 30, "money received"),
    _w("inflow", 90, "money received"),
    _w("largest_inflow", 7, "largest single credit"),
    _w("largest_inflow", 30, "largest single credit"),
    _w("largest_inflow", 90, "largest single credit"),
    _w("salary", 30, "salary received"),
    _w("salary", 60, "salary received"),
    _w("salary_count", 90, "salary payments"),
    _w("transfer_in", 7, "transfers received"),
    _w("transfer_in", 30, "transfers received"),
    _w("outflow", 7, "money spent or sent"),
    _w("outflow", 30, "money spent or sent"),
    _w("outflow", 90, "money spent or sent"),
    _w("card_spend", 7, "card spending"),
    _w("card_spend", 30, "card spending"),
    _w("card_count", 30, "card purchases"),
    _w("transfer_out", 7, "transfers sent"),
    _w("transfer_out", 30, "transfers sent"),
    _w("housing", 30, "rent and mortgage payments"),
    _w("fees", 30, "fees charged"),
    _w("fee_count", 7, "fees charged (count)"),
    _w("fee_count", 30, "fees charged (count)"),
    _w("transfer_out_count", 7, "transfers sent (count)"),
    _w("transfer_out_count", 30, "transfers sent (count)"),
    _w("investment_buy", 90, "investments bought"),
    _w("transactions", 1, "transactions"),
    _w("transactions", 7, "transactions"),
    _w("transactions", 30, "transactions"),
    _w("property_views", 1, "property listing and mortgage calculator views"),
    _w("property_views", 7, "property listing and mortgage calculator views"),
    _w("property_views", 30, "property listing and mortgage calculator views"),
    _w("mortgage_calculator_views", 7, "mortgage calculator views"),
    _w("investment_views", 7, "fund page views"),
    _w("investment_views", 30, "fund page views"),
    _w("insurance_views", 7, "insurance quote views"),
    _w("insurance_views", 30, "insurance quote views"),
    _w("card_offer_views", 7, "card offer views"),
    _w("card_offer_views", 30, "card offer views"),
    _w("loan_views", 7, "loan calculator views"),
    _w("loan_views", 30, "loan calculator views"),
    _w("pension_views", 30, "pension page views"),
    _w("pension_views", 90, "pension page views"),
    _w("deposit_views", 7, "deposit rate views"),
    _w("deposit_views", 30, "deposit rate views"),
    _w("page_views", 7, "page views"),
    _w("logins", 1, "logins"),
    _w("logins", 7, "logins"),
    _w("logins", 30, "logins"),
    *(
        _w(f"applied_{need}", 90, f"{need.replace('_', ' ')} applications submitted")
        for need in NEEDS
    ),
    *(
        _w(f"decided_{need}", 90, f"{need.replace('_', ' ')} applications decided")
        for need in NEEDS
    ),
    _w("complaints", 30, "complaints"),
    _w("complaints", 90, "complaints"),
    _w("contacts", 7, "contacts with the bank"),
    _w("contacts", 30, "contacts with the bank"),
    _w("profile_updates", 30, "profile updates"),
    _w("products_opened", 90, "products opened"),
    _w("products_closed", 90, "products closed"),
    Feature("days_since_login", "days since the last login", "logins", kind="since"),
    Feature(
        "days_since_transaction", "days since the last transaction", "transactions", kind="since"
    ),
    Feature("days_since_page_view", "days since the last page view", "page_views", kind="since"),
    # How recent an interest is, not only how strong: interest ramps up before an application.
    *(
        Feature(f"days_since_{measure}", f"days since the last {what}", measure, kind="since")
        for measure, what in (*_TOPIC_VIEWS, ("fees", "fee charged"), ("complaints", "complaint"))
    ),
    *(
        Feature(
            f"days_since_first_{measure}",
            f"days since the first {what} of the last {MAX_DAYS} days",
            measure,
            kind="first",
        )
        for measure, what in _TOPIC_VIEWS
    ),
    Feature(
        "net_flow_30d",
        "money in minus money out, last 30 days (balance trend)",
        kind="derived",
        derive=lambda v: v["inflow_30d"] - v["outflow_30d"],
    ),
    Feature(
        "inflow_outflow_ratio_30d",
        "money in over money out, last 30 days",
        kind="derived",
        derive=lambda v: _ratio(v["inflow_30d"], v["outflow_30d"]),
    ),
    Feature(
        "salary_change_ratio",
        "salary of the last 30 days over the 30 days before",
        kind="derived",
        derive=lambda v: _ratio(v["salary_30d"], v["salary_60d"] - v["salary_30d"]),
    ),
    Feature(
        "large_inflow_share_30d",
        "largest credit over all money received, last 30 days",
        kind="derived",
        derive=lambda v: _ratio(v["largest_inflow_30d"], v["inflow_30d"]),
    ),
    *(
        Feature(
            f"in_flight_{need}",
            f"{need.replace('_', ' ')} applications submitted and not yet decided",
            kind="derived",
            derive=partial(_in_flight, need=need),
        )
        for need in NEEDS
    ),
    Feature(
        "applications_in_flight",
        "applications submitted and not yet decided",
        kind="derived",
        derive=lambda v: sum(
            (_in_flight(v, need) for need in NEEDS), np.zeros_like(v["inflow_1d"])
        ),
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
_WINDOWS = sorted({f.days for f in FEATURES if f.kind == "window" and f.days})
assert max(_WINDOWS) == MAX_DAYS


# --- state ----------------------------------------------------------------------------------
@dataclass
class WindowState:
    """One customer's buckets (absolute day, measure, value; one entry per pair), the as-of time
    and the event ids seen within the allowed lateness."""

    as_of_us: int | None = None
    days: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    measures: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    seen: dict[str, int] = field(default_factory=dict)

    _HEADER = struct.Struct("<qII")  # as_of (-1: none), entries, seen ids

    def to_bytes(self) -> bytes:
        ids = "\n".join(self.seen).encode()
        if self.seen and ids.count(b"\n") != len(self.seen) - 1:
            # Ids of the safe pattern have no newline; one that did would corrupt the state.
            raise ValueError("an event id contains a newline")
        times = np.fromiter(self.seen.values(), np.int64, len(self.seen))
        return b"".join(
            (
                self._HEADER.pack(
                    -1 if self.as_of_us is None else self.as_of_us, len(self.days), len(self.seen)
                ),
                self.days.astype(np.int32).tobytes(),
                self.measures.astype(np.int8).tobytes(),
                self.values.astype(np.float64).tobytes(),
                times.tobytes(),
                ids,
            )
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> WindowState:
        as_of, n, k = cls._HEADER.unpack_from(blob)
        at = cls._HEADER.size
        days = np.frombuffer(blob, np.int32, n, at)
        at += 4 * n
        measures = np.frombuffer(blob, np.int8, n, at)
        at += n
        values = np.frombuffer(blob, np.float64, n, at)
        at += 8 * n
        times = np.frombuffer(blob, np.int64, k, at)
        at += 8 * k
        ids = blob[at:].decode().split("\n") if k else []
        return cls(
            None if as_of < 0 else as_of,
            days,
            measures,
            values,
            dict(zip(ids, times.tolist(), strict=True)),
        )


@dataclass
class Applied:
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    late_events: list[tuple[str, str, int]] = field(default_factory=list)  # id, customer, µs
    #: Events after the ceiling (the server's clock plus the allowed skew): not applied.
    future: int = 0


def _micros(moment: datetime) -> int:
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
        at = _micros(event.occurred_at)
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


def combine_buckets(
    rows: np.ndarray, days: np.ndarray, measures: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per (row, day, measure): values summed, or the maximum for "max" measures;
    sorted by row, then day, then measure (int64 arrays, values float64)."""
    measures = measures.astype(np.int64)
    base = int(days.min()) if len(days) else 0
    span = int(days.max()) - base + 1 if len(days) else 1
    key = (rows.astype(np.int64) * span + (days - base)) * N_MEASURES + measures
    unique, inverse = np.unique(key, return_inverse=True)
    merged = np.bincount(inverse, weights=values, minlength=len(unique))
    is_max = IS_MAX[measures]
    if is_max.any():
        maxima = np.full(len(unique), -np.inf)
        np.maximum.at(maxima, inverse[is_max], values[is_max])
        merged = np.where(IS_MAX[unique % N_MEASURES], maxima, merged)
    rest = unique // N_MEASURES
    return rest // span, rest % span + base, unique % N_MEASURES, merged


def _merge(
    states: dict[str, WindowState],
    customers: list[str],
    new_rows: np.ndarray,
    new_days: np.ndarray,
    new_measures: np.ndarray,
    new_values: np.ndarray,
    lateness_us: int,
) -> None:
    """Merge new contributions into the customers' buckets, all customers at once."""
    old = [states[c] for c in customers]
    counts = np.fromiter((len(s.days) for s in old), np.int64, len(old))
    rows = np.concatenate([np.repeat(np.arange(len(old)), counts), new_rows])
    days = np.concatenate([*(s.days for s in old), new_days]).astype(np.int64)
    measures = np.concatenate([*(s.measures for s in old), new_measures]).astype(np.int64)
    values = np.concatenate([*(s.values for s in old), new_values])
    today = np.fromiter((s.as_of_us // DAY_US for s in old), np.int64, len(old))  # type: ignore[operator]
    keep = days > today[rows] - MAX_DAYS
    rows, days, measures, values = rows[keep], days[keep], measures[keep], values[keep]
    u_row, u_day, u_measure, merged = combine_buckets(rows, days, measures, values)
    u_day, u_measure = u_day.astype(np.int32), u_measure.astype(np.int8)
    bounds = np.searchsorted(u_row, np.arange(len(old) + 1)).tolist()
    for row, state in enumerate(old):
        lo, hi = bounds[row], bounds[row + 1]
        state.days, state.measures, state.values = u_day[lo:hi], u_measure[lo:hi], merged[lo:hi]
        # Ids arrive roughly in time order, so the first one is (about) the oldest: prune only
        # when it has fallen behind the lateness horizon.
        horizon = state.as_of_us - lateness_us  # type: ignore[operator]
        if state.seen and next(iter(state.seen.values())) < horizon:
            state.seen = {i: t for i, t in state.seen.items() if t >= horizon}


def compute_features(states: list[WindowState]) -> np.ndarray:
    """Feature matrix [customer, feature] for states that have an as-of time."""
    k = len(states)
    counts = np.array([len(s.days) for s in states], np.int64)
    rows = np.repeat(np.arange(k), counts)
    days = np.concatenate([s.days for s in states]).astype(np.int64) if k else np.zeros(0)
    measures = np.concatenate([s.measures for s in states]).astype(np.int64) if k else np.zeros(0)
    values = np.concatenate([s.values for s in states]) if k else np.zeros(0)
    today = np.array([s.as_of_us // DAY_US for s in states], np.int64)  # type: ignore[operator]
    return features_from_buckets(rows, days, measures, values, today)


def features_from_buckets(
    rows: np.ndarray, days: np.ndarray, measures: np.ndarray, values: np.ndarray, today: np.ndarray
) -> np.ndarray:
    """Feature matrix [customer, feature] from day buckets (customer row, absolute day,
    measure, value; one entry per triple) and each customer's as-of day. The stream and the
    offline backfill both end here, so they cannot disagree on what a feature means."""
    k = len(today)
    age = today[rows] - days
    window: dict[int, np.ndarray] = {}
    is_max = IS_MAX[measures]
    for w in _WINDOWS:
        inside = (age >= 0) & (age < w)
        flat = rows[inside] * N_MEASURES + measures[inside]
        sums = np.bincount(flat, weights=values[inside], minlength=k * N_MEASURES)
        maxima = np.zeros(k * N_MEASURES)
        top = inside & is_max
        np.maximum.at(maxima, rows[top] * N_MEASURES + measures[top], values[top])
        window[w] = np.where(IS_MAX, maxima.reshape(k, N_MEASURES), sums.reshape(k, N_MEASURES))
    last_flat = np.full(k * N_MEASURES, -1, np.int64)
    seen_inside = (age >= 0) & (age < MAX_DAYS) & (values != 0)
    np.maximum.at(
        last_flat, rows[seen_inside] * N_MEASURES + measures[seen_inside], days[seen_inside]
    )
    last = last_flat.reshape(k, N_MEASURES)
    first_flat = np.full(k * N_MEASURES, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(
        first_flat, rows[seen_inside] * N_MEASURES + measures[seen_inside], days[seen_inside]
    )
    first = first_flat.reshape(k, N_MEASURES)
    named: dict[str, np.ndarray] = {}
    out = np.zeros((k, len(FEATURES)))
    for j, feature in enumerate(FEATURES):
        if feature.kind == "window":
            column = window[feature.days][:, M[feature.measure]]  # type: ignore[index]
        elif feature.kind == "since":
            seen = last[:, M[feature.measure]]  # type: ignore[index]
            column = np.where(seen >= 0, today - seen, NOT_SEEN_DAYS).astype(np.float64)
        elif feature.kind == "first":
            seen = last[:, M[feature.measure]]  # type: ignore[index]
            began = first[:, M[feature.measure]]  # type: ignore[index]
            column = np.where(seen >= 0, today - began, NOT_SEEN_DAYS).astype(np.float64)
        else:
            column = feature.derive(named)  # type: ignore[misc]
            if column.shape != (k,):
                column = np.broadcast_to(column, (k,)).copy()
        named[feature.name] = column
        out[:, j] = column
    return out


# --- reference ------------------------------------------------------------------------------
def reference_features(
    events: Iterable[Event], lateness_us: int = DEFAULT_LATENESS_US
) -> dict[str, tuple[datetime, dict[str, float]]]:
    """The same definitions computed the plain way, for checking the stream against:
    ``{customer: (as_of, {feature: value})}``."""
    buckets: dict[str, dict[tuple[int, int], float]] = {}
    as_of: dict[str, int] = {}
    seen: dict[str, dict[str, int]] = {}
    for event in events:
        customer = event.customer_id
        mine = seen.setdefault(customer, {})
        at = _micros(event.occurred_at)
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
        today = as_of[customer] // DAY_US
        named: dict[str, np.ndarray] = {}
        for feature in FEATURES:
            if feature.kind == "window":
                m, width = M[feature.measure], feature.days or 0  # type: ignore[index]
                inside = [v for (d, mm), v in bucket.items() if mm == m and 0 <= today - d < width]
                value = max(inside, default=0.0) if IS_MAX[m] else sum(inside)
            elif feature.kind in ("since", "first"):
                m = M[feature.measure]  # type: ignore[index]
                days = [
                    d
                    for (d, mm), v in bucket.items()
                    if mm == m and v and 0 <= today - d < MAX_DAYS
                ]
                pick = max if feature.kind == "since" else min
                value = float(today - pick(days)) if days else NOT_SEEN_DAYS
            else:
                value = float(feature.derive(named)[0])  # type: ignore[misc]
            named[feature.name] = np.array([value], dtype=np.float64)
        moment = datetime.fromtimestamp(as_of[customer] / 1e6, UTC)
        result[customer] = (moment, {name: float(v[0]) for name, v in named.items()})
    return result
