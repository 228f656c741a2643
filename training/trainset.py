"""Point-in-time training sets from Feast: snapshots, labels and the profiling-consent filter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from feast import FeatureStore

from feature_repo.aggregates import FEATURE_NAMES
from feature_repo.definitions import ACTIVITY_SERVICE


@dataclass(frozen=True)
class TrainingSet:
    frame: pd.DataFrame  # customer_id, event_timestamp, features..., label
    need: str
    horizon_days: int
    excluded_without_profiling: int
    fingerprint: str

    @property
    def features(self) -> list[str]:
        return list(FEATURE_NAMES)


def snapshots(
    customer_ids: list[str], first: datetime, last: datetime, step_days: int
) -> pd.DataFrame:
    times = pd.date_range(first, last, freq=f"{step_days}D")
    return pd.DataFrame(
        [(c, t) for t in times for c in customer_ids], columns=["customer_id", "event_timestamp"]
    )


def with_profiling_consent(entity: pd.DataFrame, consents: pd.DataFrame) -> pd.DataFrame:
    """Keep snapshots whose latest profiling entry at that time is a grant (unknown is a no)."""
    profiling = consents[consents["purpose"] == "profiling"].sort_values("recorded_at")
    profiling = profiling[["customer_id", "recorded_at", "granted"]].rename(
        columns={"recorded_at": "event_timestamp"}
    )
    profiling["event_timestamp"] = pd.to_datetime(profiling["event_timestamp"], utc=True)
    ordered = entity.sort_values("event_timestamp")
    joined = pd.merge_asof(ordered, profiling, on="event_timestamp", by="customer_id")
    return joined[joined["granted"].eq(True)].drop(columns="granted")


def labels(
    entity: pd.DataFrame, outcomes: pd.DataFrame, need: str, horizon: timedelta
) -> pd.Series:
    """1 when the customer applied for or opened a product of ``need`` within ``horizon``.

    ``outcomes``: customer_id, need, occurred_at (applications and product openings).
    """
    hits = outcomes[outcomes["need"] == need][["customer_id", "occurred_at"]]
    merged = entity[["customer_id", "event_timestamp"]].reset_index().merge(hits, on="customer_id")
    inside = (merged["occurred_at"] > merged["event_timestamp"]) & (
        merged["occurred_at"] <= merged["event_timestamp"] + horizon
    )
    positive = set(merged.loc[inside, "index"])
    return pd.Series([int(i in positive) for i in entity.index], index=entity.index, name="label")


def build(
    store: FeatureStore,
    entity: pd.DataFrame,
    consents: pd.DataFrame,
    outcomes: pd.DataFrame,
    need: str,
    horizon_days: int,
) -> TrainingSet:
    allowed = with_profiling_consent(entity, consents)
    excluded = len(entity) - len(allowed)
    frame = store.get_historical_features(
        entity_df=allowed, features=store.get_feature_service(ACTIVITY_SERVICE)
    ).to_df()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame = frame.sort_values(["event_timestamp", "customer_id"], ignore_index=True)
    frame["label"] = labels(frame, outcomes, need, timedelta(days=horizon_days))
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(frame[["customer_id", *FEATURE_NAMES, "label"]], index=False)
        .to_numpy()
        .tobytes()
    ).hexdigest()
    return TrainingSet(frame, need, horizon_days, excluded, f"sha256:{digest}")
