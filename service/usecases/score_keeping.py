"""Scores kept ready: when customers' features change, the served models score them once, and
the scores, the model versions and the reasons are stored beside the features
(``feature_repo.scores``). A decision then reads them with the features and computes nothing
that is already there (``service.usecases.decision_scores``); the alerter looks at customers
through the same scoring.

Only customers who agreed to profiling are scored: the others' scores are neither computed nor
kept. Reasons are kept only for needs scored at or above the lowest score at which one of their
actions may be delivered: reasons are given only for what is delivered, and a contribution
costs several times a score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import numpy as np

from consent.rules.catalog import Catalog
from consent.rules.model import ConsentGiven
from consent.stores.registry import ConsentRegistry
from feature_repo.definitions import PROFILE_VIEW, SCORING_FEATURES
from feature_repo.scores import (
    FEATURES_AT,
    FINGERPRINT,
    KEPT_REASONS,
    PROFILE_AT,
    SCORE_FIELDS,
    reason_fields,
    score_field,
    version_field,
)
from service.adapters.features.online_features import OnlineFeatures, StoredScores
from service.adapters.features.writers import OnlineWriter
from service.usecases.ports import Scorer, ServedModels

#: A kept reason's feature index that says: computed, and no feature pushed the score up.
NO_REASON = -1.0
_COLUMN = {name: j for j, name in enumerate(SCORE_FIELDS)}
_INDEX = {name: j for j, name in enumerate(SCORING_FEATURES)}
#: Customers scored per consent query and write (bounded statements and pipelines).
CHUNK = 1_000


def forget_withdrawn(writer: OnlineWriter, entries: Sequence[ConsentGiven]) -> None:
    """Drop the kept scores of customers who withdrew profiling consent in ``entries``: what
    the models made of them is not kept without it (a decision would not use it anyway)."""
    withdrawn = sorted(
        {e.customer_id for e in entries if e.purpose == "profiling" and not e.granted}
    )
    if withdrawn:
        writer.drop_scores(withdrawn)


def kept_scores(
    models: Mapping[str, Scorer], online: OnlineFeatures, stale: frozenset[str]
) -> StoredScores | None:
    """The scores kept beside ``online`` if they are the ones scoring it now would give: the
    same values (their fingerprint), the same model version for every need, and no feature
    stale (stale ones are scored as missing). None otherwise: then the decision scores in
    process."""
    kept = online.scores
    if kept is None or stale:
        return None
    if kept.versions != {need: model.version for need, model in models.items()}:
        return None
    if kept.fingerprint != online.fingerprint():
        return None
    return kept


class ScoreKeeper:
    """Scores customers whose features changed and stores the scores beside the features."""

    def __init__(
        self,
        models: ServedModels,
        read: Callable[[str], OnlineFeatures],
        writer: OnlineWriter,
        registry: ConsentRegistry,
        catalog: Catalog,
        clock: Callable[[], datetime],
    ) -> None:
        self.models = models
        self.read = read
        self.writer = writer
        self.registry = registry
        self.clock = clock
        #: Per need, the lowest score at which one of its actions may be delivered.
        self.thresholds: dict[str, float] = {
            need: threshold
            for need in {a.need for a in catalog.actions.values() if a.need}
            if (threshold := catalog.delivery_threshold(need)) is not None
        }
        self.kept = 0

    def keep(self, customers: Sequence[str]) -> dict[str, OnlineFeatures]:
        """Read and score ``customers`` who agreed to profiling; store their scores. Returns
        each one's features as read, with the scores just kept."""
        out: dict[str, OnlineFeatures] = {}
        for start in range(0, len(customers), CHUNK):
            out.update(self._keep(customers[start : start + CHUNK]))
        return out

    def _keep(self, customers: Sequence[str]) -> dict[str, OnlineFeatures]:
        now = self.clock()
        profiled = self.registry.granted_at("profiling", "any", now, among=customers)
        onlines = [self.read(c) for c in customers if c in profiled]
        onlines = [o for o in onlines if o.known]
        if not onlines:
            return {}
        models = self.models.snapshot()  # one set of models for the whole batch
        matrix = score_matrix(models, onlines, self.thresholds)
        at_us = np.full(len(onlines), round(now.timestamp() * 1e6), np.int64)
        self.writer.write_scores([o.customer_id for o in onlines], at_us, matrix)
        self.kept += len(onlines)
        return {
            o.customer_id: replace(
                o, scores=StoredScores.of(dict(zip(SCORE_FIELDS, row, strict=True)))
            )
            for o, row in zip(onlines, matrix.tolist(), strict=True)
        }


def score_matrix(
    models: Mapping[str, Scorer], onlines: Sequence[OnlineFeatures], thresholds: dict[str, float]
) -> np.ndarray:
    """The score rows (``SCORE_FIELDS`` columns) of ``onlines``, as the decision would score
    each: the same rows (``Scorer.row``), its calibrated probability, and for a need at or above
    its threshold its strongest positive contributions."""
    matrix = np.full((len(onlines), len(SCORE_FIELDS)), np.nan)
    matrix[:, _COLUMN[FEATURES_AT]] = [o.as_of.timestamp() for o in onlines]  # type: ignore[union-attr]
    matrix[:, _COLUMN[PROFILE_AT]] = [_stamp(o) for o in onlines]
    matrix[:, _COLUMN[FINGERPRINT]] = [o.fingerprint() for o in onlines]
    rows: dict[tuple[str, ...], np.ndarray] = {}  # models on the same features share rows
    for need, model in models.items():
        block = rows.get(model.features)
        if block is None:
            block = rows[model.features] = np.vstack([model.row(o.values) for o in onlines])
        scores = model.probabilities(block)
        matrix[:, _COLUMN[score_field(need)]] = scores
        matrix[:, _COLUMN[version_field(need)]] = float(model.version)
        threshold = thresholds.get(need, math.inf)
        due = np.flatnonzero(scores >= threshold)
        if not len(due):
            continue
        contributions = model.contributions_of(block[due])
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :KEPT_REASONS]
        for k in range(order.shape[1]):  # a model may have fewer features than that
            index_field, contribution_field = reason_fields(need, k + 1)
            picked = order[:, k]
            values = contributions[np.arange(len(due)), picked]
            positive = values > 0
            features = np.array([_INDEX[model.features[j]] for j in picked], np.float64)
            if k == 0:  # computed, none positive: say so, so the decision does not recompute
                features = np.where(positive, features, NO_REASON)
                values = np.where(positive, values, np.nan)
            else:
                features = np.where(positive, features, np.nan)
                values = np.where(positive, values, np.nan)
            matrix[due, _COLUMN[index_field]] = features
            matrix[due, _COLUMN[contribution_field]] = values
    return matrix


def _stamp(online: OnlineFeatures) -> float:
    moment = online.as_of_by_view.get(PROFILE_VIEW)
    return math.nan if moment is None else moment.timestamp()


class Rescoring:
    """After the served models change (a promotion, a rollback), the customers with a timer on
    the worker's partitions (anything in the last 90 days) are scored again in the background,
    a page per round, so decisions find their scores kept again. Customers quieter than that
    are scored in process by decisions, and kept again at their next event."""

    def __init__(
        self,
        keeper: Callable[[], ScoreKeeper | None],
        customers: Callable[[int, int, int], tuple[int, list[str]]],
        partitions: Callable[[], list[int]],
        page: int = CHUNK,
    ) -> None:
        self._keeper = keeper
        self._customers = customers
        self._partitions = partitions
        self.page = page
        #: The served versions the kept scores were last swept for (None: not looked yet).
        self.versions: dict[str, str] | None = None
        self._todo: list[int] = []
        self._cursor = 0
        self.rescored = 0

    @property
    def pending(self) -> bool:
        return bool(self._todo)

    def round(self) -> int:
        """Look whether the served versions changed; rescore the next page if a sweep is on.
        Returns how many customers were looked at."""
        keeper = self._keeper()
        if keeper is None:
            return 0
        served = {need: model.version for need, model in keeper.models.snapshot().items()}
        if self.versions is None:  # the versions this process started with: kept as read
            self.versions = served
        elif served != self.versions:
            self.versions = served
            self._todo, self._cursor = sorted(self._partitions()), 0
        if not self._todo:
            return 0
        self._cursor, customers = self._customers(self._todo[0], self._cursor, self.page)
        if self._cursor == 0:
            self._todo.pop(0)
        keeper.keep(customers)
        self.rescored += len(customers)
        return len(customers)
