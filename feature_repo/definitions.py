"""Feast objects: the customer entity, the activity feature view and the push source feeding it,
the profile view, and the scores kept ready beside them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64

from feature_repo.activity import FEATURE_NAMES, FEATURES, MAX_DAYS, VALID_UNTIL
from feature_repo.profile import PROFILE_FEATURE_NAMES, PROFILE_FEATURES
from feature_repo.scores import SCORE_FIELDS, SCORES_VIEW

ACTIVITY_VIEW = "customer_activity"
ACTIVITY_PUSH = "customer_activity_push"
ACTIVITY_SERVICE = "need_scoring_v1"
PROFILE_VIEW = "customer_profile"
#: Every feature the need models may use, and the view each one lives in.
SCORING_FEATURES: tuple[str, ...] = FEATURE_NAMES + PROFILE_FEATURE_NAMES
VIEW_OF: dict[str, str] = {
    **{name: ACTIVITY_VIEW for name in FEATURE_NAMES},
    **{name: PROFILE_VIEW for name in PROFILE_FEATURE_NAMES},
}
#: How old a row may be for a point-in-time join to still use it: the longest window.
ACTIVITY_TTL = timedelta(days=MAX_DAYS)


def _allowed_age(kind: str, days: int | None) -> timedelta:
    # For rows that do not say until when they hold (written before the stream's timers): such
    # a row is as of the customer's latest event, and its windows drift as it ages. Half a
    # window of drift is allowed; day counts ("since", "first") and derived features may be
    # two days off. Rows that say are judged by the pipeline's lag (OnlineFeatures.fresh).
    if kind == "window" and days:
        return timedelta(days=days) / 2
    return timedelta(days=2)


#: How old each scoring feature may be before serving treats it as missing (None: no limit; a
#: customer extract holds until the next one, as the profile view's TTL says).
MAX_AGE: dict[str, timedelta | None] = {
    **{f.name: _allowed_age(f.kind, f.days) for f in FEATURES},
    **dict.fromkeys(PROFILE_FEATURE_NAMES),
}

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A bank customer, keyed by the core-banking customer id.",
)


def parts(offline_dir: Path, view: str) -> str:
    """The Parquet parts of a view's offline folder, as the offline store (DuckDB) globs them;
    parts being written are hidden (``.name.tmp``) until renamed."""
    return str(offline_dir / view / "*.parquet")


def build(offline_dir: Path) -> list[Any]:
    """All Feast objects, with the offline store at ``offline_dir`` (a folder of Parquet parts)."""
    activity_source = FileSource(
        name="customer_activity_offline",
        path=parts(offline_dir, ACTIVITY_VIEW),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description="Every feature row the stream worker wrote online, as of its event time.",
    )
    push = PushSource(name=ACTIVITY_PUSH, batch_source=activity_source)
    activity = FeatureView(
        name=ACTIVITY_VIEW,
        entities=[customer],
        ttl=ACTIVITY_TTL,
        schema=[
            *(Field(name=f.name, dtype=Float64, description=f.description) for f in FEATURES),
            Field(
                name=VALID_UNTIL,
                dtype=Float64,
                description="Epoch seconds until which the row is exact with no new event "
                "(the next midnight, UTC, its features change at; inf: until the next event).",
            ),
        ],
        source=push,
        online=True,
        description="Windowed aggregates of a customer's events, kept current by the stream.",
    )
    profile_source = FileSource(
        name="customer_profile_offline",
        path=parts(offline_dir, PROFILE_VIEW),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description="Customer-table extracts, one row per customer and extract.",
    )
    profile = FeatureView(
        name=PROFILE_VIEW,
        entities=[customer],
        ttl=timedelta(0),  # no expiry: an extract holds until the next one
        schema=[
            Field(name=f.name, dtype=Float64, description=f.description) for f in PROFILE_FEATURES
        ],
        source=profile_source,
        online=True,
        description="Who the customer is: age, income, segment, products held (no gender).",
    )
    scoring = FeatureService(name=ACTIVITY_SERVICE, features=[activity, profile])
    scores_source = FileSource(
        name="customer_scores_offline",
        path=parts(offline_dir, SCORES_VIEW),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description="Not written: scores are kept online only, for decisions (the models and "
        "the feature history reproduce them).",
    )
    scores = FeatureView(
        name=SCORES_VIEW,
        entities=[customer],
        ttl=timedelta(0),
        schema=[Field(name=name, dtype=Float64) for name in SCORE_FIELDS],
        source=scores_source,
        online=True,
        description="The served need models' scores and reasons, kept ready by the stream's "
        "scorer when the customer's features change (feature_repo/scores.py).",
    )
    return [
        customer,
        activity_source,
        push,
        activity,
        profile_source,
        profile,
        scoring,
        scores_source,
        scores,
    ]
