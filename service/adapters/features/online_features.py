"""A customer's online features as a decision reads them, and how old each one is."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from consent.rules.vocabulary import NEEDS as _NEEDS
from feature_repo.activity import VALID_UNTIL
from feature_repo.definitions import ACTIVITY_VIEW, MAX_AGE, SCORING_FEATURES, VIEW_OF
from feature_repo.scores import (
    FEATURES_AT,
    FINGERPRINT,
    KEPT_REASONS,
    PROFILE_AT,
    SCORES_VIEW,
    fingerprint,
    reason_fields,
    score_field,
    version_field,
)

#: The default allowed lag (``Settings.allowed_feature_lag_minutes``).
DEFAULT_LAG = timedelta(minutes=15)


def feature_age(moment: datetime, now: datetime) -> float:
    """Seconds between a feature row's time and ``now``, never negative. A row stamped in the
    future (a host's clock ahead, an upstream time the bounds let through) is as old as it is
    far from now: jitter between hosts reads as a few seconds, and a row from 2099 is stale,
    never fresh forever."""
    return abs((now - moment).total_seconds())


@dataclass(frozen=True)
class StoredScores:
    """The scores kept ready beside a customer's features (``feature_repo.scores``): what the
    models of ``versions`` made of the rows of ``features_at`` and ``profile_at``."""

    #: The activity and profile row times scored (epoch seconds; None: no profile row).
    features_at: float
    profile_at: float | None
    #: The fingerprint of the values scored (``feature_repo.scores.fingerprint``).
    fingerprint: float
    scores: dict[str, float]
    versions: dict[str, str]
    #: Per need, its strongest positive contributions (feature, contribution), strongest
    #: first; kept only where an action of the need could be delivered (a need missing here
    #: has none kept; an empty tuple: none pushed the score up).
    reasons: dict[str, tuple[tuple[str, float], ...]]

    @classmethod
    def of(cls, values: dict[str, float | None]) -> StoredScores | None:
        """The scores in a read's values (None: none kept)."""
        features_at = _number(values.get(FEATURES_AT))
        if features_at is None:
            return None
        scores: dict[str, float] = {}
        versions: dict[str, str] = {}
        reasons: dict[str, tuple[tuple[str, float], ...]] = {}
        for need in _NEEDS:
            score = _number(values.get(score_field(need)))
            version = _number(values.get(version_field(need)))
            if score is None or version is None:
                continue
            scores[need], versions[need] = score, str(int(version))
            kept: list[tuple[str, float]] = []
            computed = False
            for k in range(1, KEPT_REASONS + 1):
                index_field, contribution_field = reason_fields(need, k)
                index = _number(values.get(index_field))
                contribution = _number(values.get(contribution_field))
                computed = computed or index is not None
                if index is None or index < 0 or contribution is None:
                    break  # none (more) kept; -1: computed, and none pushed the score up
                kept.append((SCORING_FEATURES[int(index)], contribution))
            if computed:
                reasons[need] = tuple(kept)
        return cls(
            features_at,
            _number(values.get(PROFILE_AT)),
            _number(values.get(FINGERPRINT)) or math.nan,
            scores,
            versions,
            reasons,
        )


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


@dataclass(frozen=True)
class OnlineFeatures:
    customer_id: str
    values: dict[str, float | None]
    #: The activity row's time (the customer's latest event the stream has folded in).
    as_of: datetime | None
    #: Each view's row time (None: no row), so every feature's age is known.
    as_of_by_view: dict[str, datetime | None] = field(default_factory=dict)
    #: Until when the activity row is exact with no new event (epoch seconds; inf: until her
    #: next event; None: the row does not say, as rows written before timers).
    valid_until: float | None = None
    #: How far the stream is processed (the oldest partition's watermark; None: unknown).
    watermark: datetime | None = None
    #: How far behind the stream or a row may be before the row is stale.
    allowed_lag: timedelta = DEFAULT_LAG
    #: The scores kept ready beside the features, as read with them (None: none). Not part of
    #: what the features are: a read through Feast's SDK, which does not get them, is equal.
    scores: StoredScores | None = field(default=None, compare=False)
    #: The fingerprint of ``values`` when the read worked it out (``fingerprint``).
    values_fingerprint: float | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of_views(
        cls,
        customer_id: str,
        values: dict[str, float | None],
        stamps: dict[str, datetime | None],
        values_fingerprint: float | None = None,
    ) -> OnlineFeatures:
        """Every scoring feature in scoring order (None where ``values`` has none), with each
        view's row time (``stamps``), and the scores kept ready if the read got them."""
        ordered = {name: values.get(name) for name in SCORING_FEATURES}
        valid = values.get(VALID_UNTIL)
        if valid is not None and math.isnan(valid):  # a row that does not say (a null)
            valid = None
        scores = StoredScores.of(values) if stamps.get(SCORES_VIEW) is not None else None
        views = {view: at for view, at in stamps.items() if view != SCORES_VIEW}
        return cls(
            customer_id,
            ordered,
            stamps.get(ACTIVITY_VIEW),
            views,
            valid,
            scores=scores,
            values_fingerprint=values_fingerprint,
        )

    def fingerprint(self) -> float:
        """The fingerprint of the values (``feature_repo.scores.fingerprint``): whether scores
        kept for some values are these values' scores."""
        if self.values_fingerprint is not None:
            return self.values_fingerprint
        return fingerprint(self.values.values())

    @property
    def known(self) -> bool:
        return self.as_of is not None

    def age_of(self, name: str, now: datetime) -> float | None:
        """Seconds since the feature's row was computed (None: no row)."""
        moment = self.as_of_by_view.get(VIEW_OF[name])
        return None if moment is None else feature_age(moment, now)

    def fresh(self, now: datetime) -> tuple[dict[str, float | None], frozenset[str]]:
        """The values with every stale feature treated as missing, and the names of those
        features: stale data is never used silently.

        An activity row that says until when it holds is stale only when the pipeline is
        behind: the row's next change (a midnight) or the stream's watermark is more than the
        allowed lag before ``now``, or the row is from beyond ``now`` by more than that. A
        quiet customer's row is exact, however old. A row that does not say (written before
        timers) is judged by its age, feature by feature (``MAX_AGE``)."""
        stale: set[str] = set()
        for view, moment in self.as_of_by_view.items():
            if moment is None:
                continue
            if view == ACTIVITY_VIEW and self.valid_until is not None:
                if self._behind(moment, now):
                    stale.update(n for n in _VIEW_NAMES[view] if n in self.values)
                continue
            limits = _LIMITS.get(view)
            if not limits:
                continue
            age = feature_age(moment, now)
            # The view's features whose allowed age is under this row's age.
            over = bisect.bisect_left(limits[0], age)
            stale.update(n for n in limits[1][:over] if n in self.values)
        if not stale:
            return self.values, frozenset()
        return {k: None if k in stale else v for k, v in self.values.items()}, frozenset(stale)

    def _behind(self, moment: datetime, now: datetime) -> bool:
        lag = self.allowed_lag.total_seconds()
        at = now.timestamp()
        valid = self.valid_until if self.valid_until is not None else math.inf
        if moment.timestamp() > at + lag:
            return True
        if self.watermark is not None:
            valid = min(valid, self.watermark.timestamp())
        return valid + lag < at


def _limits() -> dict[str, tuple[list[float], list[str]]]:
    """Per view, its features that have an allowed age, by that age: (ages, names)."""
    by_view: dict[str, list[tuple[float, str]]] = {}
    for name, limit in MAX_AGE.items():
        if limit is not None and name in VIEW_OF:
            by_view.setdefault(VIEW_OF[name], []).append((limit.total_seconds(), name))
    return {
        view: ([age for age, _ in ranked], [name for _, name in ranked])
        for view, ranked in ((v, sorted(items)) for v, items in by_view.items())
    }


_LIMITS = _limits()
_VIEW_NAMES: dict[str, tuple[str, ...]] = {
    ACTIVITY_VIEW: tuple(n for n in SCORING_FEATURES if VIEW_OF[n] == ACTIVITY_VIEW)
}
