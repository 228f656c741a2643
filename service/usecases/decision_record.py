"""The audit record of a decision: what every record says (its id, time, trigger, channel and
the versions it was decided under), the features it read and the models whose scores it used."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from consent.rules.policy import Policy
from consent.rules.record import DecisionRecord, FeaturesRead, ModelUsed
from feature_repo.definitions import SCORING_FEATURES, VIEW_OF
from service import __version__
from service.adapters.features.online_features import OnlineFeatures, feature_age
from service.usecases.decision_messages import DecideForCustomer, Scored

#: The audit log replaces this with the customer's pseudonym; the raw id is never written.
PENDING_REF = "pending"

#: Each feature view's features, in the order decisions record them.
VIEW_FEATURES: dict[str, tuple[str, ...]] = {}
for _name in SCORING_FEATURES:
    VIEW_FEATURES[VIEW_OF[_name]] = (*VIEW_FEATURES.get(VIEW_OF[_name], ()), _name)


def new_record(
    command: DecideForCustomer, now: datetime, policy: Policy, **fields: Any
) -> DecisionRecord:
    """The decision record: what every record says, and ``fields`` (what was decided)."""
    nothing: dict[str, Any] = {
        "candidates": (),
        "delivered": (),
        "consents_relied_on": (),
        "features": (),
        "models": (),
        "fallback": None,
    }
    return DecisionRecord(
        decision_id=str(uuid.uuid4()),
        decided_at=now,
        trigger=command.trigger or {"kind": "api_request", "context": command.context},
        customer_ref=PENDING_REF,
        channel=command.channel,
        policy_version=policy.version,
        code_version=__version__,
        **{**nothing, **fields},
    )


def feature_reads(online: OnlineFeatures | None, now: datetime) -> tuple[FeaturesRead, ...]:
    """Every feature read, by feature view: the time of the view's row, its age, values."""
    if online is None or online.as_of is None:
        return ()
    reads = []
    for view, names in VIEW_FEATURES.items():
        as_of = online.as_of_by_view.get(view)
        reads.append(
            FeaturesRead.model_construct(  # ours, already the right types
                as_of=as_of,
                age_seconds=None if as_of is None else round(feature_age(as_of, now), 3),
                values={n: online.values[n] for n in names if n in online.values},
            )
        )
    return tuple(reads)


def models_used(scored: Scored) -> tuple[ModelUsed, ...]:
    """The models whose scores the decision used, as the record names them."""
    return tuple(
        ModelUsed(
            need=m.need,  # type: ignore[arg-type]
            name=m.name,
            version=m.version,
            run_id=m.run_id,
            digest=m.digest or None,
        )
        for m in scored.models.values()
        if m.need in scored.scores
    )
