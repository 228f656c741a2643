"""What the models make of a customer's features: a score per need, and for the needs a
decision delivers, the features that pushed the score up the most (its reasons)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import numpy as np

from service.adapters.features.online_features import OnlineFeatures
from service.usecases.decision_messages import Reason, Reasons, Scored
from service.usecases.ports import Scorer
from service.usecases.score_keeping import kept_scores

#: How many of a score's strongest positive contributions are reported as its reasons.
TOP_REASONS = 3


def score_features(
    models: Mapping[str, Scorer], online: OnlineFeatures | None, now: datetime, profiled: bool
) -> Scored:
    """What ``models`` make of ``online`` as of ``now``; they run only if ``profiled``."""
    values, stale = _served(online, now)
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


def score_many(
    models: Mapping[str, Scorer],
    onlines: Sequence[OnlineFeatures | None],
    now: datetime,
    profiled: Sequence[bool],
) -> list[Scored]:
    """``score_features`` of each of ``onlines`` (with its ``profiled``), each model run once
    over all the rows it scores (batch work: ranking a day's opportunities): the same scores."""
    out: list[Scored] = []
    waiting: list[Scored] = []
    for online, allowed in zip(onlines, profiled, strict=True):
        values, stale = _served(online, now)
        kept = kept_scores(models, online, stale) if allowed and values else None  # type: ignore[arg-type]
        scores = dict(kept.scores) if kept is not None else {}
        rows: dict[tuple[str, ...], np.ndarray] = {}
        if allowed and values and kept is None:
            for model in models.values():
                if model.features not in rows:
                    rows[model.features] = model.row(values)
        out.append(Scored(online, allowed, values, stale, models, scores, rows, kept))
        if rows:
            waiting.append(out[-1])
    if not waiting:
        return out
    for need, model in models.items():
        matrix = np.stack([w.rows[model.features] for w in waiting])
        for scored, probability in zip(waiting, model.probability_each(matrix), strict=True):
            scored.scores[need] = probability
    return out


def _served(
    online: OnlineFeatures | None, now: datetime
) -> tuple[dict[str, float | None], frozenset[str]]:
    """The values a decision scores: stale features served as missing (the gate withholds
    what depends on them), and the stale features' names."""
    raw = online.values if online is not None and online.known else {}
    return online.fresh(now) if online is not None and raw else ({}, frozenset())


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
