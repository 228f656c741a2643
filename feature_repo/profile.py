"""Customer profile features: who the customer is, as the core-banking extract knows them.

Behaviour alone misses what a relationship manager knows at a glance: a 58-year-old who already
holds a pension needs something else than a 30-year-old renter. These features come from the
bank's customer table (a daily extract in production, ``customers.parquet`` for the synthetic
bank), not from the event stream; each row is stamped with the time the extract describes.

Gender is deliberately not a feature: the models must not use it, and the fairness report
measures what they do across genders and age bands instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from consent.rules.vocabulary import NEEDS

SEGMENTS = ("affluent", "private", "small_business")  # "mass" is the baseline
EMPLOYMENT = ("self_employed", "unemployed", "retired", "student")  # "employed" is the baseline


@dataclass(frozen=True)
class ProfileFeature:
    name: str
    description: str


PROFILE_FEATURES: tuple[ProfileFeature, ...] = (
    ProfileFeature("age", "age in years"),
    ProfileFeature("income", "yearly income"),
    ProfileFeature("tenure_years", "years as a customer"),
    ProfileFeature("debt_to_income", "monthly debt service over monthly income"),
    ProfileFeature("in_arrears", "1 when a repayment is overdue"),
    *(ProfileFeature(f"segment_{s}", f"1 in the {s.replace('_', ' ')} segment") for s in SEGMENTS),
    *(ProfileFeature(f"employment_{e}", f"1 when {e.replace('_', ' ')}") for e in EMPLOYMENT),
    *(ProfileFeature(f"holds_{n}", f"1 when a {n.replace('_', ' ')} is held") for n in NEEDS),
)
PROFILE_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in PROFILE_FEATURES)
#: Columns a customer table must have to give profile features.
REQUIRED_COLUMNS = (
    "customer_id",
    "age",
    "income",
    "tenure_years",
    "debt_to_income",
    "in_arrears",
    "segment",
    "employment",
    *(f"holds_{n}" for n in NEEDS),
)


def profile_rows(customers: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Feature rows (customer_id, event_timestamp, every profile feature) from a customer table.
    Unknown segments or employment states set no flag."""
    missing = [c for c in REQUIRED_COLUMNS if c not in customers.columns]
    if missing:
        raise ValueError(f"the customer table lacks the columns {missing}")
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    out = pd.DataFrame({"customer_id": customers["customer_id"].astype(str).to_numpy()})
    out["event_timestamp"] = pd.Timestamp(as_of)
    for name in ("age", "income", "tenure_years", "debt_to_income"):
        out[name] = pd.to_numeric(customers[name], errors="raise").astype(float).to_numpy()
    out["in_arrears"] = customers["in_arrears"].astype(bool).astype(float).to_numpy()
    segment = customers["segment"].astype(str).to_numpy()
    for s in SEGMENTS:
        out[f"segment_{s}"] = (segment == s).astype(float)
    employment = customers["employment"].astype(str).to_numpy()
    for e in EMPLOYMENT:
        out[f"employment_{e}"] = (employment == e).astype(float)
    for need in NEEDS:
        out[f"holds_{need}"] = customers[f"holds_{need}"].astype(bool).astype(float).to_numpy()
    assert list(out.columns[2:]) == list(PROFILE_FEATURE_NAMES)
    return out
