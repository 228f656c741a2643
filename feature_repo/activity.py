"""The activity features of the Feast feature view ``customer_activity``: what each one is.

Each reduces a measure (``feature_repo.aggregates``) over a window of calendar days in UTC ending
on the as-of day (1, 7, 30, 60 or 90 days; ``inflow_7d`` as of 29 November covers 23–29
November), counts days since a measure was last seen, or combines other features (ratios,
changes, applications in flight). The as-of time is the customer's latest event time.
``feature_repo.windows`` computes them for the stream and the backfill, ``feature_repo.reference``
the plain way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from consent.rules.vocabulary import NEEDS

#: Longest window; buckets older than this are evicted.
MAX_DAYS = 90
#: ``days_since_*`` when the measure has not been seen in the longest window.
NOT_SEEN_DAYS = float(MAX_DAYS + 1)


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    measure: str | None = None
    days: int | None = None
    #: "window" (sum or max of the measure), "since" (days since last seen), "first" (days
    #: since first seen in the longest window: how long an interest has lasted), "overdue"
    #: (working days a monthly measure is late: ``overdue_working_days``) or "derived".
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


def overdue_working_days(last: np.ndarray, today: np.ndarray) -> np.ndarray:
    """Working days (Monday to Friday; no holiday calendar) a monthly payment last seen on day
    ``last`` is overdue on day ``today`` (days since the epoch; ``last`` < 0: not seen, 0).

    The payment is expected on the same day of the next month (the month's last day when it
    is shorter), or at the end of the next month when the last one came in the last three
    days of its month (a month-end payer). It is overdue by the working days after that date
    that have passed in full: on day ``today``, those before it. A payment brought forward
    over a weekend (at most two days) cannot make the next one look two working days late."""
    seen = last >= 0
    paid = np.where(seen, last, 0).astype("datetime64[D]")
    month = paid.astype("datetime64[M]")
    day = (paid - month.astype("datetime64[D]")).astype(np.int64)
    next_start = (month + 1).astype("datetime64[D]")
    this_length = (next_start - month.astype("datetime64[D]")).astype(np.int64)
    next_length = ((month + 2).astype("datetime64[D]") - next_start).astype(np.int64)
    month_end = day >= this_length - 3
    expected = next_start + np.where(month_end, next_length - 1, np.minimum(day, next_length - 1))
    late = np.busday_count(expected + 1, np.asarray(today).astype("datetime64[D]"))
    return np.where(seen, np.maximum(late, 0), 0).astype(np.float64)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ratio: np.ndarray = np.divide(a, b, out=np.zeros_like(a), where=b > 0)
    return ratio


def _in_flight(values: dict[str, np.ndarray], need: str) -> np.ndarray:
    pending: np.ndarray = np.maximum(
        values[f"applied_{need}_90d"] - values[f"decided_{need}_90d"], 0.0
    )
    return pending


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
    # An expected event that does not come is information too: a salary that stops.
    Feature(
        "salary_overdue_days",
        "working days the salary is overdue",
        "salary",
        kind="overdue",
    ),
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
    # Appended, like the measures: rows already written keep their order. A customer who has
    # just applied is out of that market for a while; the count of the last 90 days says that
    # she applied, the day says when she may be back in it.
    *(
        Feature(
            f"days_since_applied_{need}",
            f"days since the last {need.replace('_', ' ')} application submitted",
            f"applied_{need}",
            kind="since",
        )
        for need in NEEDS
    ),
    _w("difficulty_signals", 30, "fees, loan calculator views and enquiries"),
    Feature(
        "days_since_first_difficulty_signals",
        f"days since the first fee, loan calculator view or enquiry of the last {MAX_DAYS} days",
        "difficulty_signals",
        kind="first",
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
#: Beside the features, each activity row says until when it is exact with no new event: the
#: next midnight its features change at, in epoch seconds (inf: until her next event; a null:
#: a row written before rows said so). Not a feature: no model uses it.
VALID_UNTIL = "valid_until"
#: Every field of an activity row, in the order rows are written.
ACTIVITY_FIELDS: tuple[str, ...] = (*FEATURE_NAMES, VALID_UNTIL)
#: The windows' widths in days, shortest first.
WINDOWS = sorted({f.days for f in FEATURES if f.kind == "window" and f.days})
assert max(WINDOWS) == MAX_DAYS
