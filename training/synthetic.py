"""A small synthetic bank with a planted mortgage signal.

Customers live ordinary lives (salary, card spending, logins, occasional browsing). Some enter a
latent *home-purchase* situation: they receive a large transfer, browse property listings and
the mortgage calculator, and many apply for a mortgage in the following weeks. Everything is
drawn from one seeded generator, so the same seed and end date give the same bank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DAY = 86_400
CONTACT_CHANNELS = ("mobile_app", "web", "email", "sms", "phone", "rm", "branch")
DEFAULT_END = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class BankSpec:
    seed: int = 7
    customers: int = 1_000
    days: int = 60
    end: datetime = DEFAULT_END
    #: Share of customers without a mortgage who enter a home-purchase situation in the period.
    home_intent_share: float = 0.10
    #: Chance that a customer in that situation applies for a mortgage while it lasts.
    intent_apply_probability: float = 0.5
    #: Monthly chance of a mortgage application without the situation (background noise).
    background_apply_monthly: float = 0.002


@dataclass
class Bank:
    spec: BankSpec
    customers: pd.DataFrame
    consents: pd.DataFrame
    events: pd.DataFrame  # one row per event: contract fields, payload as a JSON string

    @classmethod
    def read(cls, folder: Path) -> Bank:
        spec = json.loads((folder / "bank.json").read_text())
        spec["end"] = datetime.fromisoformat(spec["end"])
        return cls(
            BankSpec(**spec),
            pd.read_parquet(folder / "customers.parquet"),
            pd.read_parquet(folder / "consents.parquet"),
            pd.read_parquet(folder / "events.parquet"),
        )

    def event_dicts(self) -> list[dict[str, Any]]:
        """The events as contract dictionaries, in event-time order."""
        return [
            {
                "event_id": row.event_id,
                "customer_id": row.customer_id,
                "type": row.type,
                "occurred_at": row.occurred_at.isoformat().replace("+00:00", "Z"),
                "channel": row.channel,
                "schema_version": 1,
                "payload": json.loads(row.payload),
            }
            for row in self.events.itertuples(index=False)
        ]

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        spec = {**self.spec.__dict__, "end": self.spec.end.isoformat()}
        (out / "bank.json").write_text(json.dumps(spec, indent=2))
        self.customers.to_parquet(out / "customers.parquet", index=False)
        self.consents.to_parquet(out / "consents.parquet", index=False)
        self.events.to_parquet(out / "events.parquet", index=False)


def _customers(rng: np.random.Generator, n: int) -> pd.DataFrame:
    age = rng.integers(18, 81, n)
    income = np.round(rng.lognormal(mean=10.6, sigma=0.6, size=n), -2)
    segment = np.where(
        income > 250_000,
        "private",
        np.where(
            income > 90_000, "affluent", np.where(rng.random(n) < 0.06, "small_business", "mass")
        ),
    )
    mortgage_chance = np.where((age >= 30) & (age <= 65), 0.35, 0.05)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:07d}" for i in range(1, n + 1)],
            "age": age,
            "income": income,
            "segment": segment,
            "holds_mortgage": rng.random(n) < mortgage_chance,
            "employed": rng.random(n) < 0.85,
        }
    )


def _consents(rng: np.random.Generator, customers: pd.DataFrame, start: datetime) -> pd.DataFrame:
    """Consent history: most customers answered, some never did, some later withdrew."""
    rows: list[dict[str, Any]] = []

    def add(cid: str, purpose: str, channel: str, granted: bool, at: datetime) -> None:
        rows.append(
            {
                "customer_id": cid,
                "purpose": purpose,
                "channel": channel,
                "granted": granted,
                "recorded_at": at,
                "source": "onboarding" if granted else "preference_centre",
                "notice_version": "2026-01",
            }
        )

    for cid in customers["customer_id"]:
        onboarded = start - timedelta(days=int(rng.integers(30, 2000)))
        answer = rng.random()
        if answer < 0.08:
            continue  # never answered: unknown consent, which means no
        add(cid, "profiling", "any", True, onboarded)
        add(cid, "service", "mobile_app", True, onboarded)
        if answer < 0.80:
            for channel in ("mobile_app", "web", "email", "rm"):
                if rng.random() < 0.75:
                    add(cid, "marketing", channel, True, onboarded)
        if rng.random() < 0.05:
            withdrawn = onboarded + timedelta(days=int(rng.integers(1, 25)))
            add(cid, "marketing", "rm", False, withdrawn)
            add(cid, "marketing", "mobile_app", False, withdrawn)
        if rng.random() < 0.03:
            add(
                cid, "profiling", "any", False, onboarded + timedelta(days=int(rng.integers(1, 25)))
            )
    return pd.DataFrame(rows)


class _Events:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.columns: dict[str, list[Any]] = {
            k: [] for k in ("customer_id", "type", "ts", "channel", "payload")
        }

    def add(self, cid: str, kind: str, ts: np.ndarray, channel: str, payloads: list[dict]) -> None:
        count = len(ts)
        self.columns["customer_id"].extend([cid] * count)
        self.columns["type"].extend([kind] * count)
        self.columns["ts"].extend(ts.tolist())
        self.columns["channel"].extend([channel] * count)
        self.columns["payload"].extend(json.dumps(p, separators=(",", ":")) for p in payloads)

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.columns)
        frame = frame.sort_values(["ts", "customer_id", "type"], kind="stable", ignore_index=True)
        ids = self.rng.bytes(16 * len(frame))
        frame.insert(0, "event_id", [ids[i * 16 : (i + 1) * 16].hex() for i in range(len(frame))])
        frame["occurred_at"] = pd.to_datetime(frame.pop("ts"), unit="s", utc=True)
        return frame[["event_id", "customer_id", "type", "occurred_at", "channel", "payload"]]


def _money(amount: float) -> str:
    return f"{amount:.2f}"


def _daytime(rng: np.random.Generator, days: np.ndarray, start: float) -> np.ndarray:
    """Seconds since epoch at a plausible hour (mostly 8:00–22:00 UTC) of the given days."""
    hours = np.clip(rng.normal(14, 3.5, len(days)), 0, 23.99)
    return np.floor(start + days * DAY + hours * 3600).astype(np.int64)


def generate(spec: BankSpec) -> Bank:
    rng = np.random.default_rng(spec.seed)
    start = spec.end - timedelta(days=spec.days)
    t0 = start.timestamp()
    customers = _customers(rng, spec.customers)
    consents = _consents(rng, customers, start)
    events = _Events(rng)
    horizon = spec.days

    for row in customers.itertuples(index=False):
        cid = row.customer_id
        # Salary on the 25th-ish of each month for the employed.
        if row.employed:
            pay_days = np.arange(int(rng.integers(0, 30)), horizon, 30)
            salary = row.income / 12 * rng.normal(1.0, 0.01, len(pay_days))
            events.add(
                cid,
                "transaction",
                _daytime(rng, pay_days, t0),
                "core_banking",
                [
                    {
                        "amount": _money(s),
                        "currency": "CNY",
                        "direction": "credit",
                        "category": "salary",
                    }
                    for s in salary
                ],
            )
        # Card spending and logins, Poisson per day.
        spend_days = np.repeat(np.arange(horizon), rng.poisson(0.8, horizon))
        amounts = rng.lognormal(4.5, 1.0, len(spend_days))
        events.add(
            cid,
            "transaction",
            _daytime(rng, spend_days, t0),
            "mobile_app",
            [
                {
                    "amount": _money(a),
                    "currency": "CNY",
                    "direction": "debit",
                    "category": "card_purchase",
                }
                for a in amounts
            ],
        )
        login_days = np.repeat(np.arange(horizon), rng.poisson(0.5, horizon))
        events.add(
            cid,
            "login",
            _daytime(rng, login_days, t0),
            "mobile_app",
            [{"method": "password"}] * len(login_days),
        )
        # Background browsing, including a little property browsing that leads nowhere.
        noise_days = np.repeat(np.arange(horizon), rng.poisson(0.04, horizon))
        events.add(
            cid,
            "page_view",
            _daytime(rng, noise_days, t0),
            "web",
            [
                {
                    "page": str(
                        rng.choice(
                            ["property_listing", "fund_detail", "card_offer", "deposit_rates"]
                        )
                    ),
                    "seconds": float(rng.integers(5, 300)),
                }
                for _ in noise_days
            ],
        )
        apply_day: float | None = None
        # The planted situation: a home purchase in the making.
        if not row.holds_mortgage and rng.random() < spec.home_intent_share:
            begin = int(rng.integers(0, horizon))
            length = int(rng.integers(25, 60))
            if rng.random() < 0.7:
                inflow = float(rng.uniform(150_000, 900_000))
                events.add(
                    cid,
                    "transaction",
                    _daytime(rng, np.array([begin]), t0),
                    "core_banking",
                    [
                        {
                            "amount": _money(inflow),
                            "currency": "CNY",
                            "direction": "credit",
                            "category": "transfer_in",
                        }
                    ],
                )
            days = np.arange(begin, min(begin + length, horizon))
            browse = np.repeat(days, rng.poisson(0.5, len(days)))
            events.add(
                cid,
                "page_view",
                _daytime(rng, browse, t0),
                "mobile_app",
                [
                    {
                        "page": str(rng.choice(["property_listing", "mortgage_calculator"])),
                        "seconds": float(rng.integers(20, 600)),
                    }
                    for _ in browse
                ],
            )
            if rng.random() < spec.intent_apply_probability:
                apply_day = begin + float(rng.uniform(7, length))
        elif rng.random() < spec.background_apply_monthly * horizon / 30:
            apply_day = float(rng.uniform(0, horizon))
        if apply_day is not None and apply_day < horizon:
            events.add(
                cid,
                "application",
                _daytime(rng, np.array([int(apply_day)]), t0),
                "mobile_app",
                [{"product": "mortgage", "status": "submitted"}],
            )
    return Bank(spec, customers, consents, events.frame())
