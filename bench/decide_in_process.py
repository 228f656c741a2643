"""The feature and model part of a decision in this process, two ways, one request after
another: the naive one (``FeatureStore.get_online_features`` per request, then per need one
``Booster.predict`` and one ``pred_contrib``) and the decision service's (``FeastFeatures.read``,
which brings the scores kept ready, then ``score_features`` and ``reasons``), checked to give the
same scores and reasons."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np

from bench.summaries import distribution, ratio
from feature_repo.definitions import ACTIVITY_SERVICE
from service.adapters.models import NeedModel
from service.bootstrap import Container
from service.usecases.decision_messages import Reasons, Scored
from service.usecases.decision_scores import reasons, score_features


def naive_decision_part(
    store: Any, service: Any, models: Mapping[str, NeedModel], customer: str
) -> dict[str, tuple[float, np.ndarray]]:
    """Per request through the Feast SDK, then per need one predict and one pred_contrib."""
    row = store.get_online_features(
        features=service, entity_rows=[{"customer_id": customer}]
    ).to_dict()
    out = {}
    for need, model in models.items():
        matrix = np.array(
            [[np.nan if row[f][0] is None else row[f][0] for f in model.features]], dtype=float
        )
        score = float(model.predict(matrix)[0])
        out[need] = score, np.asarray(model.booster.predict(matrix, pred_contrib=True))[0]
    return out


def our_decision_part(
    container: Container,
    models: Mapping[str, NeedModel],
    thresholds: Mapping[str, float],
    customer: str,
) -> tuple[Scored, Reasons]:
    """What the decision service does for features, scores and reasons: one online read (the
    scores kept ready with the features), scoring only if none kept fit, and the reasons of
    every need scored at or above the lowest score one of its actions may be delivered at."""
    online = container.features.read(customer)
    scored = score_features(models, online, datetime.now(UTC), True)
    due = [n for n, s in scored.scores.items() if s >= thresholds.get(n, math.inf)]
    return scored, reasons(due, scored)


def time_each(work: Callable[[str], object], customers: Sequence[str]) -> list[float]:
    """Milliseconds per call of ``work(customer)``, one after another."""
    spent = []
    for customer in customers:
        began = time.perf_counter()
        work(customer)
        spent.append((time.perf_counter() - began) * 1000)
    return spent


def compare_in_process(
    container: Container, customers: Sequence[str], warmup: int = 20
) -> dict[str, Any]:
    models = container.models.snapshot()
    store = container.feature_store
    service = store.get_feature_service(ACTIVITY_SERVICE)
    thresholds = {
        need: t for need in models if (t := container.catalog.delivery_threshold(need)) is not None
    }
    naive = partial(naive_decision_part, store, service, models)
    ours = partial(our_decision_part, container, models, thresholds)

    # Both ways must give the same: the same scores, and our reasons the naive way's strongest
    # positive contributions.
    kept = 0
    for customer in customers:
        theirs, (scored, given) = naive(customer), ours(customer)
        kept += scored.kept is not None
        for need, model in models.items():
            score, contributions = theirs[need]
            assert np.isclose(scored.scores[need], score), need
            if need not in given:
                continue
            ranked = sorted(
                zip(model.features, contributions[:-1], strict=True), key=lambda x: -x[1]
            )
            expected = ranked[: len(given[need])]
            assert [r.feature for r in given[need]] == [f for f, _ in expected], need
            for reason, (_, contribution) in zip(given[need], expected, strict=True):
                assert np.isclose(reason.contribution, contribution), need
    for customer in customers[:warmup]:  # connections, caches, lazy imports
        naive(customer)
        ours(customer)
    naive_ms, our_ms = time_each(naive, customers), time_each(ours, customers)
    naive_d, our_d = distribution(naive_ms), distribution(our_ms)
    return {
        "customers": len(customers),
        "needs": sorted(models),
        "share_with_scores_kept": round(kept / len(customers), 4) if customers else None,
        "naive_ms": naive_d,
        "ours_ms": our_d,
        "naive_over_ours_p50": ratio(naive_d, our_d, "p50"),
        "naive_over_ours_p99": ratio(naive_d, our_d, "p99"),
    }
