"""Customer profiles and consent records for one chunk of customers (vectorised)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from consent.rules.vocabulary import CONTACT_CHANNELS
from training.bank.spec import BankSpec

REGIONS = np.array(["north", "east", "south", "central", "west", "overseas"])
REGION_P = [0.22, 0.28, 0.20, 0.15, 0.10, 0.05]
TIMEZONES = np.array(["Asia/Shanghai", "Europe/London"])
EMPLOYMENT = np.array(["employed", "self_employed", "unemployed", "retired", "student"])
SEGMENTS = np.array(["mass", "affluent", "private", "small_business"])
HELD = (
    "current_account",
    "credit_card",
    "mortgage",
    "investment",
    "protection",
    "personal_loan",
    "term_deposit",
    "pension",
)
#: Customers per relationship manager (affluent, private and small-business customers only).
RM_BOOK_SIZE = 150


@dataclass
class People:
    """A chunk's customers: the public profile plus the latent traits behaviour draws on."""

    profile: pd.DataFrame
    age: np.ndarray
    income: np.ndarray
    employment: np.ndarray  # index into EMPLOYMENT
    segment: np.ndarray  # index into SEGMENTS
    tz: np.ndarray  # index into TIMEZONES
    holds: dict[str, np.ndarray]
    salary_day: np.ndarray  # 0: no salary
    spend_rate: np.ndarray  # card purchases per day
    login_rate: np.ndarray

    def __len__(self) -> int:
        return len(self.age)


def customer_ids(first: int, count: int) -> np.ndarray:
    return np.char.add("C", np.char.zfill(np.arange(first + 1, first + count + 1).astype(str), 7))


def _households(rng: np.random.Generator, first: int, n: int) -> np.ndarray:
    """Household index (global, by first member) for each customer: sizes 1-4."""
    sizes = rng.choice([1, 2, 3, 4], size=n, p=[0.55, 0.25, 0.12, 0.08])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    starts = starts[starts < n]
    lengths = np.diff(np.concatenate([starts, [n]]))
    return np.repeat(first + starts, lengths)


def people(rng: np.random.Generator, spec: BankSpec, first: int, n: int) -> People:
    household = _households(rng, first, n)
    leader = household - first  # index of the household's first member within the chunk
    age = np.clip(rng.normal(44, 15, n), 18, 90).astype(np.int16)
    gender = rng.choice(np.array(["F", "M", "X"]), size=n, p=[0.49, 0.49, 0.02])

    employment = np.where(
        age >= 66,
        np.where(rng.random(n) < 0.85, 3, 0),
        np.where(
            (age <= 24) & (rng.random(n) < 0.4),
            4,
            rng.choice([0, 1, 2], size=n, p=[0.78, 0.12, 0.10]),
        ),
    ).astype(np.int8)
    income = rng.lognormal(10.9, 0.65, n)
    income *= np.array([1.0, 1.25, 0.15, 0.6, 0.2])[employment]
    income = np.round(income, -2)
    segment = np.where(
        income > 300_000,
        2,
        np.where(income > 150_000, 1, np.where((employment == 1) & (rng.random(n) < 0.5), 3, 0)),
    ).astype(np.int8)
    region = rng.choice(len(REGIONS), size=n, p=REGION_P)[leader]  # households share a region
    tz = (REGIONS[region] == "overseas").astype(np.int8)
    tenure = np.minimum(rng.exponential(6.0, n), age - 18).clip(0, 40)

    affluent = segment >= 1
    holds = {
        "current_account": np.ones(n, bool),
        "credit_card": rng.random(n) < 0.30 + 0.25 * affluent,
        "mortgage": rng.random(n) < np.where((age >= 30) & (age <= 65), 0.30, 0.04),
        "investment": rng.random(n) < 0.10 + 0.30 * affluent,
        "protection": rng.random(n) < 0.18,
        "personal_loan": rng.random(n) < 0.07,
        "term_deposit": rng.random(n) < 0.10 + 0.10 * affluent,
        "pension": rng.random(n) < np.where(age >= 40, 0.35, 0.12),
    }

    start = pd.Timestamp(spec.start)
    assessed = rng.random(n) < 0.75
    assessed_days_ago = rng.uniform(1, 900, n)
    risk_assessed_at = pd.Series(start - pd.to_timedelta(assessed_days_ago, unit="D")).where(
        assessed
    )
    kyc = rng.choice(np.array(["complete", "pending", "expired"]), size=n, p=[0.95, 0.03, 0.02])
    vulnerable = rng.random(n) < np.where(age >= 75, 0.12, 0.025)
    arrears = rng.random(n) < np.where(employment == 2, 0.10, 0.02)
    n_rms = max(1, spec.customers // (RM_BOOK_SIZE * 4))
    with_rm = segment >= 1
    rm_numbers = rng.integers(1, n_rms + 1, n).astype(str)
    rm = pd.Series(np.char.add("RM", np.char.zfill(rm_numbers, 4))).where(with_rm)
    monthly_debt = holds["mortgage"] * income / 12 * rng.uniform(0.2, 0.4, n) + holds[
        "personal_loan"
    ] * income / 12 * rng.uniform(0.05, 0.15, n)
    salaried = (employment == 0) | (employment == 3)
    salary_day = np.where(salaried, rng.integers(1, 29, n), 0).astype(np.int8)

    profile = pd.DataFrame(
        {
            "customer_id": customer_ids(first, n),
            "household_id": np.char.add("H", np.char.zfill((household + 1).astype(str), 7)),
            "age": age,
            "gender": gender,
            "income": income,
            "employment": EMPLOYMENT[employment],
            "segment": SEGMENTS[segment],
            "region": REGIONS[region],
            "timezone": TIMEZONES[tz],
            "tenure_years": np.round(tenure, 1),
            "onboarded_at": start - pd.to_timedelta(np.round(tenure * 365.25), unit="D"),
            **{f"holds_{p}": holds[p] for p in HELD},
            "risk_level": pd.Series(rng.integers(1, 6, n), dtype="Int8").where(assessed),
            "risk_assessed_at": risk_assessed_at,
            "kyc_status": kyc,
            "aml_flag": rng.random(n) < 0.005,
            "vulnerable": vulnerable,
            "in_arrears": arrears,
            "debt_to_income": np.round(monthly_debt / np.maximum(income / 12, 1.0), 3),
            "rm_id": rm,
            "salary_day": salary_day,
        }
    )
    spend_rate = rng.lognormal(np.log(0.9) + 0.25 * np.log(np.maximum(income, 5_000) / 60_000), 0.5)
    login_rate = rng.lognormal(np.log(0.5), 0.6, n)
    return People(
        profile, age, income, employment, segment, tz, holds, salary_day, spend_rate, login_rate
    )


def consents(rng: np.random.Generator, spec: BankSpec, who: People) -> pd.DataFrame:
    """Consent history: grants at onboarding, some withdrawn during the period, some never."""
    mix = spec.consents
    n = len(who)
    ids = who.profile["customer_id"].to_numpy()
    onboarded = who.profile["onboarded_at"].to_numpy()
    answered = rng.random(n) >= mix.never_answered
    has_rm = who.profile["rm_id"].notna().to_numpy()
    keys: list[tuple[str, str, np.ndarray]] = [
        ("profiling", "any", answered & (rng.random(n) < mix.profiling))
    ]
    for contact in CONTACT_CHANNELS:
        p = mix.marketing[contact]
        p_each = np.where(has_rm, p, p * 0.3) if contact == "rm" else np.full(n, p)
        keys.append(("marketing", contact, answered & (rng.random(n) < p_each)))
    for contact in CONTACT_CHANNELS:
        keys.append(("service", contact, answered & (rng.random(n) < mix.service[contact])))

    frames = []
    period = spec.days * 86_400
    start = pd.Timestamp(spec.start)
    for purpose, channel, granted in keys:
        rows = np.flatnonzero(granted)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": ids[rows],
                    "purpose": purpose,
                    "channel": channel,
                    "granted": True,
                    "recorded_at": onboarded[rows],
                    "source": "onboarding",
                    "notice_version": "2025-06",
                }
            )
        )
        withdrawn = rows[rng.random(len(rows)) < mix.withdrawn]
        at = start + pd.to_timedelta(rng.integers(0, period, len(withdrawn)), unit="s")
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": ids[withdrawn],
                    "purpose": purpose,
                    "channel": channel,
                    "granted": False,
                    "recorded_at": at,
                    "source": "preference_centre",
                    "notice_version": "2026-01",
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table["recorded_at"] = pd.to_datetime(table["recorded_at"], utc=True)
    return table.sort_values(["customer_id", "recorded_at"], kind="stable", ignore_index=True)


def day_offsets(start: datetime, days: int) -> np.ndarray:
    """UTC offset in seconds per time zone and day (local noon), so DST is honoured."""
    from zoneinfo import ZoneInfo

    offsets = np.zeros((len(TIMEZONES), days), dtype=np.int64)
    for z, name in enumerate(TIMEZONES):
        zone = ZoneInfo(name)
        for d in range(days):
            moment = start + timedelta(days=d, hours=12)
            offset = moment.astimezone(zone).utcoffset()
            offsets[z, d] = int(offset.total_seconds()) if offset else 0
    return offsets
