"""The feature and model part of a decision in this process, two ways, one request after
another: the naive one (``FeatureStore.get_online_features`` per request, then per need one
``Booster.predict`` and one ``pred_contrib``) and the decision service's (``FeastFeatures.read``
+ ``NeedModel.score`` per need), checked to give the same contributions."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from bench.summaries import distribution, ratio
from feature_repo.definitions import ACTIVITY_SERVICE
from service.adapters.models import NeedModel
from service.bootstrap import Container


def naive_decision_part(
    store: Any, service: Any, models: Mapping[str, NeedModel], customer: str
) -> dict[str, np.ndarray]:
    """Per request through the Feast SDK, then per need one predict and one pred_contrib."""
    row = store.get_online_features(
        features=service, entity_rows=[{"customer_id": customer}]
    ).to_dict()
    contributions = {}
    for need, model in models.items():
        matrix = np.array(
            [[np.nan if row[f][0] is None else row[f][0] for f in model.features]], dtype=float
        )
        model.booster.predict(matrix)
        contributions[need] = np.asarray(model.booster.predict(matrix, pred_contrib=True))[0]
    return contributions


def our_decision_part(
    container: Container, models: Mapping[str, NeedModel], customer: str
) -> dict[str, dict[str, float]]:
    """What the decision service does for features and scores (with every contribution)."""
    online = container.features.read(customer)
    values = online.values if online.known else {}
    return {need: dict(model.score(values)[1]) for need, model in models.items()}


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
    naive = partial(naive_decision_part, store, service, models)
    ours = partial(our_decision_part, container, models)

    # Both ways must do the same work: the same contributions for the same customers.
    for customer in customers[:5]:
        theirs, mine = naive(customer), ours(customer)
        for need, model in models.items():
            expected = dict(zip(model.features, theirs[need][:-1], strict=True))
            assert all(np.isclose(expected[f], c) for f, c in mine[need].items()), need
    for customer in customers[:warmup]:  # connections, caches, lazy imports
        naive(customer)
        ours(customer)
    naive_ms, our_ms = time_each(naive, customers), time_each(ours, customers)
    naive_d, our_d = distribution(naive_ms), distribution(our_ms)
    return {
        "customers": len(customers),
        "needs": sorted(models),
        "naive_ms": naive_d,
        "ours_ms": our_d,
        "naive_over_ours_p50": ratio(naive_d, our_d, "p50"),
        "naive_over_ours_p99": ratio(naive_d, our_d, "p99"),
    }
