"""Point-in-time training sets from Feast: snapshots, labels and the profiling-consent filter.

One point-in-time join serves every need: the features of a (customer, snapshot) row do not
depend on the need, only its label does. Labels: 1 when the customer submitted an application
for, or opened, a product of the need within ``horizon_days`` after the snapshot.

Customers whose latest ``profiling`` consent entry at the snapshot is not a grant (withdrawn, or
never given: unknown is a no) are left out *before* Feast is asked for anything, so their data
never reaches a training set; how many rows that removed is reported. So are customers whose
profiling consent is withdrawn at training time: an objection covers the data from before it
too, so a customer who objected after a snapshot is in none of the snapshots.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore

from consent.rules.vocabulary import NEEDS
from feature_repo.definitions import ACTIVITY_SERVICE, SCORING_FEATURES

DEFAULT_HORIZON_DAYS = 30


@dataclass(frozen=True)
class TrainingSet:
    """customer_id, event_timestamp, every scoring feature, and ``label_<need>`` per need."""

    frame: pd.DataFrame
    horizon_days: int
    excluded_without_profiling: int
    fingerprint: str
    feature_views: dict[str, str] = field(default_factory=dict)
    #: Rows (consenting at their snapshot) left out because the consent is withdrawn now.
    excluded_withdrawn_now: int = 0

    @property
    def features(self) -> list[str]:
        return list(SCORING_FEATURES)

    @property
    def snapshot_window(self) -> tuple[str, str]:
        stamps = self.frame["event_timestamp"]
        return str(stamps.min()), str(stamps.max())


#: A snapshot is taken at the end of a day (UTC), the last microsecond before midnight: windows
#: are calendar days, so at midnight itself the one-day windows are empty for everyone, and a
#: model trained there would never see them otherwise.
END_OF_DAY = pd.Timedelta(microseconds=1)


def snapshot_times(first: datetime, last: datetime, step_days: int) -> list[pd.Timestamp]:
    """Ends of days (UTC, just before midnight) from ``first``'s midnight to ``last`` every
    ``step_days``."""
    start = pd.Timestamp(first).tz_convert("UTC").normalize()
    midnights = pd.date_range(start, pd.Timestamp(last), freq=f"{step_days}D")
    return [m - END_OF_DAY for m in midnights]


def snapshots(customer_ids: Sequence[str], times: Sequence[datetime]) -> pd.DataFrame:
    ids = np.asarray(customer_ids, dtype=object)
    stamps = pd.DatetimeIndex([pd.Timestamp(t) for t in times])
    return pd.DataFrame(
        {
            "customer_id": np.tile(ids, len(stamps)),
            "event_timestamp": np.repeat(stamps, len(ids)),
        }
    )


def with_profiling_consent(entity: pd.DataFrame, consents: pd.DataFrame) -> pd.DataFrame:
    """Keep snapshots whose latest profiling entry at that time is a grant (unknown is a no)."""
    profiling = consents[consents["purpose"] == "profiling"].sort_values("recorded_at")
    profiling = profiling[["customer_id", "recorded_at", "granted"]].rename(
        columns={"recorded_at": "event_timestamp"}
    )
    profiling["event_timestamp"] = pd.to_datetime(profiling["event_timestamp"], utc=True)
    ordered = entity.sort_values("event_timestamp", kind="stable")
    joined = pd.merge_asof(ordered, profiling, on="event_timestamp", by="customer_id")
    return joined[joined["granted"].eq(True)].drop(columns="granted").reset_index(drop=True)


def profiled_at(consents: pd.DataFrame, customer_ids: Sequence[str], at: datetime) -> set[str]:
    """Those of ``customer_ids`` whose latest profiling entry at ``at`` is a grant."""
    if len(customer_ids) == 0:
        return set()
    probe = snapshots(customer_ids, [at])
    return set(with_profiling_consent(probe, consents)["customer_id"])


def consenting(
    entity: pd.DataFrame, consents: pd.DataFrame, now: datetime
) -> tuple[pd.DataFrame, int, int]:
    """The snapshots whose customer's profiling consent is granted at the snapshot and at
    ``now``; how many rows lacked it at their snapshot, and how many more lack it now."""
    allowed = with_profiling_consent(entity, consents)
    profiled = profiled_at(consents, allowed["customer_id"].unique(), now)
    still = allowed["customer_id"].isin(profiled)
    kept = allowed[still].reset_index(drop=True)
    return kept, len(entity) - len(allowed), int((~still).sum())


def labels(
    entity: pd.DataFrame, outcomes: pd.DataFrame, needs: Sequence[str], horizon: timedelta
) -> pd.DataFrame:
    """``label_<need>`` columns aligned with ``entity``: 1 when an outcome of the need falls in
    (snapshot, snapshot + horizon]. ``outcomes``: customer_id, need, occurred_at."""
    keys = entity[["customer_id", "event_timestamp"]].reset_index(drop=True)
    keys["row"] = np.arange(len(keys))
    hits = outcomes[outcomes["need"].isin(needs)][["customer_id", "need", "occurred_at"]]
    hits = hits.assign(occurred_at=pd.to_datetime(hits["occurred_at"], utc=True))
    merged = keys.merge(hits, on="customer_id")
    inside = (merged["occurred_at"] > merged["event_timestamp"]) & (
        merged["occurred_at"] <= merged["event_timestamp"] + horizon
    )
    merged = merged[inside]
    out = pd.DataFrame(index=entity.index)
    for need in needs:
        column = np.zeros(len(keys), np.int8)
        column[merged.loc[merged["need"] == need, "row"].to_numpy()] = 1
        out[f"label_{need}"] = column
    return out


def view_versions(store: FeatureStore) -> dict[str, str]:
    """A content hash of each feature view in the scoring service (its spec as Feast stores it)."""
    service = store.get_feature_service(ACTIVITY_SERVICE)
    versions = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        spec = view.to_proto().spec.SerializeToString(deterministic=True)
        versions[view.name] = "sha256:" + hashlib.sha256(spec).hexdigest()
    return versions


def fingerprint(frame: pd.DataFrame, horizon_days: int, views: dict[str, str]) -> str:
    """What the training set is: its rows (hashed), the views it came from, the label horizon."""
    columns = ["customer_id", "event_timestamp", *SCORING_FEATURES]
    columns += [c for c in frame.columns if c.startswith("label_")]
    rows = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy().tobytes()
    meta = json.dumps({"horizon_days": horizon_days, "views": views}, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(rows + meta).hexdigest()


#: Customers per point-in-time join. Feast's join pairs every entity row with all of its
#: customer's feature rows inside the TTL before keeping the latest, so its memory grows with
#: rows x history, beyond one machine for millions of rows at once; per block of customers it
#: stays bounded.
JOIN_CUSTOMERS = 10_000


def historical_features(
    store: FeatureStore, entity: pd.DataFrame, block: int = JOIN_CUSTOMERS
) -> pd.DataFrame:
    """The scoring features for ``entity`` (customer_id, event_timestamp), point-in-time."""
    service = store.get_feature_service(ACTIVITY_SERVICE)
    customers = entity["customer_id"].unique()
    parts = []
    for start in range(0, max(len(customers), 1), block):
        mine = entity[entity["customer_id"].isin(customers[start : start + block])]
        parts.append(store.get_historical_features(entity_df=mine, features=service).to_df())
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def build(
    store: FeatureStore,
    entity: pd.DataFrame,
    consents: pd.DataFrame,
    outcomes: pd.DataFrame,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    needs: Sequence[str] = NEEDS,
    now: datetime | None = None,
) -> TrainingSet:
    """The training set of ``entity``'s snapshots, with the profiling-consent filter at each
    snapshot and at ``now`` (default: the clock, the time of training)."""
    allowed, excluded, withdrawn_now = consenting(entity, consents, now or datetime.now(UTC))
    frame = historical_features(store, allowed)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame = frame.sort_values(["event_timestamp", "customer_id"], ignore_index=True)
    horizon = timedelta(days=horizon_days)
    frame = pd.concat([frame, labels(frame, outcomes, needs, horizon)], axis=1)
    views = view_versions(store)
    digest = fingerprint(frame, horizon_days, views)
    return TrainingSet(frame, horizon_days, excluded, digest, views, withdrawn_now)
