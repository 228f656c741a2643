"""Events emitted by a chunk of customers: everyday life plus what their situations add.

Events are built column-wise as small integer codes and numbers, and turned into contract events
(``feature_repo.events``) only when they are streamed. Every event with day index ``d`` happens in
``[start + d days, start + d + 1 days)``; the time of day follows the customer's local rhythm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import get_args

import numpy as np

from consent.rules.vocabulary import NEEDS, Channel
from feature_repo.events import BEHAVIOUR_EVENT_TYPES, Page, TransactionCategory
from training.bank.life import NEED_INDEX, Outcomes, Situations
from training.bank.profiles import People
from training.bank.spec import BankSpec

#: The behaviour the bank generates: every event type but consent changes (made elsewhere).
EVENT_TYPES = BEHAVIOUR_EVENT_TYPES
# The codes index the event contract's own vocabularies, in the contract's order.
CHANNELS: tuple[str, ...] = get_args(Channel)
CATEGORIES: tuple[str, ...] = get_args(TransactionCategory)
PAGES: tuple[str, ...] = get_args(Page)
PRODUCTS: tuple[str, ...] = (*NEEDS, "current_account")
STATUSES = ("started", "submitted", "approved", "declined")
REASONS = ("complaint", "enquiry", "service")
CHANGED = ("address", "marital_status", "dependants", "employment", "income", "risk_assessment")
DIRECTIONS = ("credit", "debit")
CODE_COLUMNS = {
    "type": EVENT_TYPES,
    "channel": CHANNELS,
    "direction": DIRECTIONS,
    "category": CATEGORIES,
    "page": PAGES,
    "product": PRODUCTS,
    "status": STATUSES,
    "reason": REASONS,
    "contact_channel": CHANNELS,
    "changed": CHANGED,
}
T, CH, CAT, PG = (
    {v: i for i, v in enumerate(x)} for x in (EVENT_TYPES, CHANNELS, CATEGORIES, PAGES)
)
PROD = {v: i for i, v in enumerate(PRODUCTS)}
#: Chance that an application is approved (then the product is opened).
APPROVAL = {"mortgage": 0.7, "personal_loan": 0.6, "credit_card": 0.8}
DEFAULT_APPROVAL = 0.9
#: Share of transactions with an outlandish amount (data-entry errors, one-off events).
OUTLIER_SHARE = 1e-4


@dataclass
class Columns:
    """Events as parallel arrays; integer codes index the tuples above (-1: not applicable)."""

    customer: list[np.ndarray] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    codes: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {k: [] for k in CODE_COLUMNS}
    )
    amount: list[np.ndarray] = field(default_factory=list)
    seconds: list[np.ndarray] = field(default_factory=list)


class Emitter:
    def __init__(self, rng: np.random.Generator, spec: BankSpec, who: People, offsets: np.ndarray):
        self.rng, self.spec, self.who = rng, spec, who
        self.offsets = offsets
        self.start = int(spec.start.timestamp())
        self.cols = Columns()
        noons = [spec.start + timedelta(days=d, hours=12) for d in range(spec.days)]
        self.weekday = np.array([moment.weekday() for moment in noons])
        self.weekend = self.weekday >= 5
        self.calendar = np.array([moment.day for moment in noons])

    # --- time -------------------------------------------------------------------------------
    def _local_seconds(self, rhythm: str, count: int) -> np.ndarray:
        rng = self.rng
        if rhythm == "office":
            hours = rng.normal(9.5, 1.0, count)
        elif rhythm == "card":
            pick = rng.random(count)
            hours = np.where(
                pick < 0.3,
                rng.normal(12.5, 1.5, count),
                np.where(pick < 0.8, rng.normal(19.0, 2.0, count), rng.uniform(8, 22, count)),
            )
        elif rhythm == "online":
            pick = rng.random(count)
            hours = np.where(
                pick < 0.5,
                rng.normal(20.5, 2.5, count),
                np.where(pick < 0.75, rng.normal(12.5, 2.0, count), rng.uniform(7, 23.5, count)),
            )
        else:
            hours = rng.uniform(0, 24, count)
        return (np.mod(hours, 24) * 3600).astype(np.int64)

    def _times(self, customer: np.ndarray, day: np.ndarray, rhythm: str) -> np.ndarray:
        local = self._local_seconds(rhythm, len(customer))
        utc_in_day = np.mod(local - self.offsets[self.who.tz[customer], day], 86_400)
        times: np.ndarray = self.start + day.astype(np.int64) * 86_400 + utc_in_day
        return times

    # --- emitting ---------------------------------------------------------------------------
    def add(
        self,
        customer: np.ndarray,
        day: np.ndarray,
        rhythm: str,
        kind: str,
        channel: str | np.ndarray,
        amount: np.ndarray | None = None,
        seconds: np.ndarray | None = None,
        **codes: int | np.ndarray,
    ) -> None:
        count = len(customer)
        if count == 0:
            return
        cols = self.cols
        cols.customer.append(customer.astype(np.int32))
        cols.ts.append(self._times(customer, day, rhythm))
        codes = {**codes, "type": T[kind]}
        codes["channel"] = CH[channel] if isinstance(channel, str) else channel
        for name in CODE_COLUMNS:
            value = codes.get(name, -1)
            cols.codes[name].append(np.broadcast_to(np.asarray(value, np.int8), (count,)).copy())
        cols.amount.append(np.full(count, np.nan) if amount is None else np.round(amount, 2))
        cols.seconds.append(
            np.full(count, np.nan, np.float32) if seconds is None else seconds.astype(np.float32)
        )

    def transactions(
        self,
        customer: np.ndarray,
        day: np.ndarray,
        rhythm: str,
        category: str,
        amount: np.ndarray,
        channel: str = "core_banking",
    ) -> None:
        credit = category in ("salary", "transfer_in")
        outliers = self.rng.random(len(amount)) < OUTLIER_SHARE
        amount = np.where(outliers, amount * self.rng.uniform(20, 100, len(amount)), amount)
        self.add(
            customer,
            day,
            rhythm,
            "transaction",
            channel,
            amount=np.maximum(amount, 0.01),
            direction=0 if credit else 1,
            category=CAT[category],
        )

    def poisson(self, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Customer and day of each event for per-[customer, day] Poisson rates."""
        counts = self.rng.poisson(rate)
        flat = np.repeat(np.arange(counts.size), counts.ravel())
        return flat // rate.shape[1], flat % rate.shape[1]

    def page_views(self, customer: np.ndarray, day: np.ndarray, page: int | np.ndarray) -> None:
        channel = np.where(self.rng.random(len(customer)) < 0.65, CH["mobile_app"], CH["web"])
        seconds = np.minimum(self.rng.lognormal(np.log(60), 0.8, len(customer)), 3600)
        self.add(customer, day, "online", "page_view", channel, seconds=seconds, page=page)


def monthly_days(day_of_month: np.ndarray, calendar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(customer, day) of a monthly event on each customer's day of the month (0: none).

    ``calendar[d]`` is the day of the month of day ``d`` of the period.
    """
    customers, days = [], []
    for dom in np.unique(day_of_month[day_of_month > 0]):
        who = np.flatnonzero(day_of_month == dom)
        when = np.flatnonzero(calendar == dom)
        customers.append(np.repeat(who, len(when)))
        days.append(np.tile(when, len(who)))
    if not customers:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(customers), np.concatenate(days)


def everyday(em: Emitter) -> None:
    """What everybody does, whatever their situation."""
    rng, spec, who = em.rng, em.spec, em.who
    n, days = len(who), spec.days
    monthly_income = who.income / 12
    calendar = em.calendar

    # Salary on the salary day; a Saturday or Sunday moves it to the Friday before.
    c, d = monthly_days(who.salary_day.astype(np.int64), calendar)
    d = np.maximum(d - np.where(em.weekday[d] == 5, 1, np.where(em.weekday[d] == 6, 2, 0)), 0)
    em.transactions(c, d, "office", "salary", monthly_income[c] * rng.normal(1.0, 0.02, len(c)))
    # Rent or mortgage payment early each month.
    pay_day = rng.integers(1, 6, n)
    c, d = monthly_days(pay_day, calendar)
    has_mortgage = who.holds["mortgage"][c]
    renting = rng.random(n) < 0.4
    housing = monthly_income[c] * rng.uniform(0.2, 0.4, len(c))
    em.transactions(
        c[has_mortgage], d[has_mortgage], "office", "mortgage_payment", housing[has_mortgage]
    )
    rent = ~has_mortgage & renting[c]
    em.transactions(c[rent], d[rent], "office", "rent", housing[rent])
    # Premiums and loan repayments for those who hold the products.
    due = rng.integers(1, 29, n)
    for product, category, share in (
        ("protection", "insurance_premium", 0.02),
        ("personal_loan", "loan_repayment", 0.08),
    ):
        c, d = monthly_days(due * who.holds[product], calendar)
        em.transactions(
            c, d, "office", category, monthly_income[c] * share * rng.uniform(0.8, 1.2, len(c))
        )

    # Card spending with a weekly rhythm.
    weekly = np.where(em.weekend, 1.3, 0.95)[None, :]
    c, d = em.poisson(who.spend_rate[:, None] * weekly)
    base = np.log(60) + 0.3 * np.log(np.maximum(who.income[c], 5_000) / 60_000)
    em.transactions(c, d, "card", "card_purchase", rng.lognormal(base, 1.0), channel="core_banking")
    # Transfers, investments and fees.
    c, d = em.poisson(np.full((n, days), 0.05))
    em.transactions(c, d, "online", "transfer_in", rng.lognormal(np.log(800), 1.2, len(c)))
    c, d = em.poisson(np.full((n, days), 0.08))
    em.transactions(
        c, d, "online", "transfer_out", rng.lognormal(np.log(1000), 1.2, len(c)), "mobile_app"
    )
    c, d = em.poisson(np.repeat(0.03 * who.holds["investment"][:, None], days, axis=1))
    em.transactions(
        c, d, "online", "investment_buy", rng.lognormal(np.log(5000), 1.0, len(c)), "mobile_app"
    )
    c, d = em.poisson(np.full((n, days), 0.01))
    em.transactions(c, d, "any", "fee", rng.uniform(5, 50, len(c)))

    # Logins and browsing.
    c, d = em.poisson(who.login_rate[:, None] * np.where(em.weekend, 0.9, 1.0)[None, :])
    channel = np.where(rng.random(len(c)) < 0.8, CH["mobile_app"], CH["web"])
    em.add(c, d, "online", "login", channel)
    c, d = em.poisson(np.full((n, days), 0.12))
    pages = rng.choice(len(PAGES), size=len(c), p=[0.44] + [0.07] * 8)
    em.page_views(c, d, pages)

    # Contacts, profile updates, closures.
    c, d = em.poisson(np.full((n, days), 0.006))
    reason = rng.choice(3, size=len(c), p=[0.06, 0.44, 0.50])
    via = rng.choice([CH["phone"], CH["branch"], CH["rm"], CH["web"]], size=len(c))
    em.add(c, d, "office", "contact", via, reason=reason, contact_channel=via)
    c, d = em.poisson(np.full((n, days), 0.002))
    em.add(
        c,
        d,
        "online",
        "profile_update",
        "mobile_app",
        changed=rng.integers(0, len(CHANGED), len(c)),
    )
    held = np.stack([who.holds[p] for p in NEEDS], axis=1)
    c, d = em.poisson(np.repeat((held.sum(axis=1) * 0.0004)[:, None], days, axis=1))
    if len(c):
        options = [np.flatnonzero(row) for row in held[c]]
        closed = np.array([o[rng.integers(len(o))] if len(o) else 0 for o in options])
        em.add(c, d, "office", "product_closed", "core_banking", product=closed)


def situational(em: Emitter, life: Situations) -> None:
    """The signals each situation leaves in the data."""
    rng, spec, who = em.rng, em.spec, em.who
    days = spec.days
    monthly_income = who.income / 12

    def browse(name: str, rate: float, page: str) -> None:
        active = life.active(name, days)
        c, d = em.poisson(active * rate)
        em.page_views(c, d, PG[page])

    # Home purchase: a large transfer in (savings, family help) and property browsing.
    who_, day = life.starts("home_purchase", days)
    big = rng.random(len(who_)) < 0.65
    c, d = who_[big], np.minimum(day[big] + rng.integers(0, 5, big.sum()), days - 1)
    amount = np.maximum(100_000, who.income[c] * rng.uniform(1.5, 6.0, len(c)))
    em.transactions(c, d, "office", "transfer_in", amount)
    browse("home_purchase", 0.30, "property_listing")
    browse("home_purchase", 0.15, "mortgage_calculator")
    # Windfall: a large credit, then funds and deposit rates.
    c, d = life.starts("windfall", days)
    em.transactions(c, d, "office", "transfer_in", monthly_income[c] * rng.uniform(3, 20, len(c)))
    browse("windfall", 0.20, "fund_detail")
    browse("windfall", 0.10, "deposit_rates")
    # Family change: the profile says so, and insurance quotes follow.
    c, d = life.starts("family_change", days)
    told = rng.random(len(c)) < 0.8
    em.add(
        c[told],
        d[told],
        "online",
        "profile_update",
        "mobile_app",
        changed=rng.choice([1, 2], size=told.sum()),
    )
    browse("family_change", 0.15, "insurance_quote")
    # Travel and spending: more and larger card spending, card offers.
    active = life.active("travel_spending", days)
    c, d = em.poisson(active * who.spend_rate[:, None] * 1.2)
    em.transactions(c, d, "card", "card_purchase", rng.lognormal(np.log(150), 1.0, len(c)))
    browse("travel_spending", 0.15, "card_offer")
    # Cash squeeze: money out, fees, loan calculators and calls to the bank.
    active = life.active("cash_squeeze", days)
    c, d = em.poisson(active * 0.10)
    em.transactions(
        c, d, "online", "transfer_out", rng.lognormal(np.log(1500), 1.0, len(c)), "mobile_app"
    )
    c, d = em.poisson(active * 0.05)
    em.transactions(c, d, "any", "fee", rng.uniform(20, 80, len(c)))
    browse("cash_squeeze", 0.20, "loan_calculator")
    c, d = em.poisson(active * 0.02)
    em.add(c, d, "office", "contact", "phone", reason=1, contact_channel=CH["phone"])
    # Approaching retirement: pension pages.
    browse("retirement_approach", 0.08, "pension_info")
    # Idle cash: deposit rates (the balance builds up because spending is lower than income).
    browse("idle_cash", 0.10, "deposit_rates")
    del monthly_income


def outcome_events(em: Emitter, outcomes: Outcomes) -> None:
    """Applications, then (for most) approval and the product opening a few days later."""
    rng, days = em.rng, em.spec.days
    c, k, d = outcomes.customer, outcomes.need, outcomes.day
    channel = rng.choice(
        [CH["mobile_app"], CH["web"], CH["branch"], CH["rm"]],
        size=len(c),
        p=[0.55, 0.25, 0.12, 0.08],
    )
    product = np.array([PROD[NEEDS[i]] for i in k], dtype=np.int8)
    em.add(c, d, "online", "application", channel, product=product, status=1)
    approval = np.array([APPROVAL.get(NEEDS[i], DEFAULT_APPROVAL) for i in k])
    decided = d + rng.integers(1, 10, len(c))
    approved = rng.random(len(c)) < approval
    inside = decided < days
    em.add(
        c[inside],
        decided[inside],
        "office",
        "application",
        "core_banking",
        product=product[inside],
        status=np.where(approved[inside], 2, 3),
    )
    opened = d + rng.integers(3, 21, len(c))
    keep = approved & (opened < days)
    em.add(c[keep], opened[keep], "office", "product_opened", "core_banking", product=product[keep])


__all__ = ["NEED_INDEX"]
