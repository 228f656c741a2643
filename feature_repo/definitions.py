"""Feast objects: the customer entity, the activity feature view and the push source feeding it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64

from feature_repo.aggregates import FEATURES, MAX_DAYS

ACTIVITY_VIEW = "customer_activity"
ACTIVITY_PUSH = "customer_activity_push"
ACTIVITY_SERVICE = "need_scoring_v1"
#: How old a row may be for a point-in-time join to still use it: the longest window.
ACTIVITY_TTL = timedelta(days=MAX_DAYS)

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A bank customer, keyed by the core-banking customer id.",
)


def build(offline_dir: Path) -> list[Any]:
    """All Feast objects, with the offline store at ``offline_dir`` (a folder of Parquet parts)."""
    activity_source = FileSource(
        name="customer_activity_offline",
        path=str(offline_dir / ACTIVITY_VIEW),
        timestamp_field="event_timestamp",
        description="Every feature row the stream worker wrote online, as of its event time.",
    )
    push = PushSource(name=ACTIVITY_PUSH, batch_source=activity_source)
    activity = FeatureView(
        name=ACTIVITY_VIEW,
        entities=[customer],
        ttl=ACTIVITY_TTL,
        schema=[Field(name=f.name, dtype=Float64, description=f.description) for f in FEATURES],
        source=push,
        online=True,
        description="Windowed aggregates of a customer's events, kept current by the stream.",
    )
    scoring = FeatureService(name=ACTIVITY_SERVICE, features=[activity])
    return [customer, activity_source, push, activity, scoring]
