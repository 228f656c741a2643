"""Scoring one row through LightGBM's single-row C API gives what ``Booster.predict`` gives."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np
import pytest

from service.adapters.models import NeedModel
from training.calibration import Calibration

FEATURES = tuple(f"f{i}" for i in range(12))


@pytest.fixture(scope="module")
def model() -> NeedModel:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, len(FEATURES)))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take their own branches
    y = np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) + rng.normal(size=4000) > 0.8
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1},
        lgb.Dataset(x, y.astype(int)),
        num_boost_round=40,
    )
    return NeedModel(
        "mortgage", "nextbest-mortgage", "1", "run", booster, Calibration(0.8, -1.2), FEATURES
    )


def rows(n: int) -> np.ndarray:
    x = np.random.default_rng(9).normal(size=(n, len(FEATURES)))
    x[::3, 2] = np.nan
    x[::5, 0] = np.nan
    return x


def test_scores_and_contributions_equal_the_package_predict(model) -> None:
    for row in rows(200):
        margin = model.booster.predict(row[None, :], raw_score=True)[0]
        expected = 1 / (1 + math.exp(-(0.8 * margin - 1.2)))
        assert model.probability(row) == pytest.approx(expected, rel=1e-12)
        theirs = model.booster.predict(row[None, :], pred_contrib=True)[0]
        ours = dict(model.contributions(row))
        assert [ours[f] for f in FEATURES] == pytest.approx(list(theirs[:-1]), rel=1e-12)


def test_contributions_come_largest_first_and_sum_to_the_margin(model) -> None:
    row = rows(1)[0]
    ranked = model.contributions(row)
    assert [c for _, c in ranked] == sorted((c for _, c in ranked), reverse=True)
    bias = model.booster.predict(row[None, :], pred_contrib=True)[0][-1]
    margin = model.booster.predict(row[None, :], raw_score=True)[0]
    assert sum(c for _, c in ranked) + bias == pytest.approx(margin)


def test_row_follows_the_feature_order_with_missing_as_nan(model) -> None:
    row = model.row({"f1": 2.0, "f0": 1.0, "f5": None})
    assert row.dtype == np.float64 and row.shape == (len(FEATURES),)
    assert row[0] == 1.0 and row[1] == 2.0
    assert np.isnan(row[5]) and np.isnan(row[11])


def test_threads_scoring_at_once_get_each_their_own_answer(model) -> None:
    data = rows(400)
    alone = [(model.probability(r), model.contributions(r)) for r in data]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: (model.probability(r), model.contributions(r)), data))
    assert together == alone


def test_a_row_of_the_wrong_shape_is_refused(model) -> None:
    with pytest.raises(ValueError, match="contiguous float64 row of 12"):
        model.probability(np.zeros(11))
    with pytest.raises(ValueError):
        model.probability(np.zeros((12, 2))[:, 0])  # not contiguous


def test_a_batch_scores_each_row_exactly_as_it_is_scored_alone(model) -> None:
    """Ranking a day's opportunities scores them at once: bit for bit the scores a decision
    computes for each alone (the margins are the same, the calibration the same arithmetic)."""
    batch = rows(300)
    assert model.probability_each(batch) == [model.probability(row) for row in batch]
    assert model.probability_each(batch[:1]) == [model.probability(batch[0])]
