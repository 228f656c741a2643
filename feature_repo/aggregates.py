"""The measures of the streaming aggregates: what one event contributes to a customer's per-day
buckets (money in by category, page views by topic, applications by need, ...).

The streaming aggregates, by job:

- ``feature_repo.aggregates`` (here): the measures, and each event's contributions to them;
- ``feature_repo.activity``: the features, each a measure reduced over a window of days;
- ``feature_repo.buckets``: one customer's per-day buckets (``WindowState``) and their bytes;
- ``feature_repo.arrival``: the arrival rules (duplicates, lateness), ``apply_events``;
- ``feature_repo.windows``: feature rows from buckets, vectorised across customers;
- ``feature_repo.reference``: everything recomputed from a list of events in plain Python.
"""

from __future__ import annotations

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
    # Signs that money is short, each weak alone: a fee charged, a loan calculator viewed, a
    # question to the bank. Counted together, a run of them says more than any one count.
    ("difficulty_signals", "sum"),
]
MEASURE_NAMES = tuple(name for name, _ in _MEASURES)
M = {name: i for i, name in enumerate(MEASURE_NAMES)}
IS_MAX = np.array([combine == "max" for _, combine in _MEASURES])
N_MEASURES = len(MEASURE_NAMES)

#: Debit measures that count transactions rather than sum their amounts.
_COUNTS = frozenset({"card_count", "fee_count", "transfer_out_count", "difficulty_signals"})
_PAGE_MEASURES = {
    "property_listing": ("property_views",),
    "mortgage_calculator": ("property_views", "mortgage_calculator_views"),
    "fund_detail": ("investment_views",),
    "insurance_quote": ("insurance_views",),
    "card_offer": ("card_offer_views",),
    "loan_calculator": ("loan_views", "difficulty_signals"),
    "pension_info": ("pension_views",),
    "deposit_rates": ("deposit_views",),
}
_DEBIT_MEASURES = {
    "card_purchase": ("card_spend", "card_count"),
    "transfer_out": ("transfer_out", "transfer_out_count"),
    "rent": ("housing",),
    "mortgage_payment": ("housing",),
    "fee": ("fees", "fee_count", "difficulty_signals"),
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
        return _contact_contributions(event)
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


def _contact_contributions(event: ContactEvent) -> list[tuple[int, float]]:
    out = [(M["contacts"], 1.0)]
    if event.payload.reason == "complaint":
        out.append((M["complaints"], 1.0))
    elif event.payload.reason == "enquiry":
        out.append((M["difficulty_signals"], 1.0))
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
    add(contact & (reason == "enquiry"), "difficulty_signals")
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
