"""What the models make of a customer's features: a score per need, and for the needs a
decision delivers, the features that pushed the score up the most (its reasons)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from service.adapters.features.online_features import OnlineFeatures
from service.usecases.decision_messages import Reason, Reasons, Scored
from service.usecases.ports import Scorer
from service.usecases.score_keeping import kept_scores

if TYPE_CHECKING:
    import numpy as np

#: How many of a score's strongest positive contributions are reported as its reasons.
TOP_REASONS = 3


def score_features(
    models: Mapping[str, Scorer], online: OnlineFeatures | None, now: datetime, profiled: bool
) -> Scored:
    """What ``models`` make of ``online`` as of ``now``; they run only if ``profiled``."""
    # Stale features are served as missing; the gate withholds what depends on them.
    raw = online.values if online is not None and online.known else {}
    values, stale = online.fresh(now) if online is not None and raw else ({}, frozenset())
    scores: dict[str, float] = {}
    rows: dict[tuple[str, ...], np.ndarray] = {}  # models on the same features share a row
    if profiled and values:
        kept = kept_scores(models, online, stale)  # type: ignore[arg-type]
        if kept is not None:  # what scoring now would give, kept ready: nothing to compute
            return Scored(online, profiled, values, stale, models, dict(kept.scores), rows, kept)
        for need, model in models.items():
            row = rows.get(model.features)
            if row is None:
                row = rows[model.features] = model.row(values)
            scores[need] = model.probability(row)
    return Scored(online, profiled, values, stale, models, scores, rows)


def reasons(needs: Iterable[str | None], scored: Scored) -> Reasons:
    """The reasons of the delivered needs that were scored: their models' strongest positive
    contributions. Only for what is delivered: a contribution costs several times a score."""
    found: Reasons = {}
    for need in needs:
        if need is None or need not in scored.scores or need in found:
            continue
        kept = scored.kept.reasons.get(need) if scored.kept is not None else None
        if kept is not None:
            found[need] = tuple(Reason(name, scored.values.get(name), c) for name, c in kept)
            continue
        model = scored.models[need]
        row = scored.rows.get(model.features)
        if row is None:  # scores kept, reasons not (the need was under its threshold then)
            row = scored.rows[model.features] = model.row(scored.values)
        contributions = model.contributions(row)
        found[need] = tuple(
            Reason(name, scored.values.get(name), c)
            for name, c in contributions[:TOP_REASONS]
            if c > 0
        )
    return found
