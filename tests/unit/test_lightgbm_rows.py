"""LightGBM's single-row C API through the adapter's own booster gives what the package's
``Booster.predict`` gives (raw scores and contributions, to the bit: the same C code predicts),
for any row of any of several real models, and LightGBM's own message when a call fails."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.adapters.lightgbm_rows import (
    LightGBMCallError,
    RowBooster,
    SingleRow,
    library_path,
)

WIDTH = 9


def _train(params: dict[str, object], rounds: int, early_stopping: bool = False) -> lgb.Booster:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3000, WIDTH))
    x[:, 4] = rng.integers(0, 6, size=len(x))  # a categorical feature
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take their own branches
    signal = np.nan_to_num(x[:, 0]) - 0.7 * np.nan_to_num(x[:, 3]) + (x[:, 4] == 2)
    y = signal + rng.normal(size=len(x))
    if params["objective"] == "binary":
        y = (y > 0.5).astype(int)
    base = {"verbose": -1, "seed": 1, "num_leaves": 15, "min_data_in_leaf": 5}
    train = lgb.Dataset(x[:2400], y[:2400], categorical_feature=[4])
    if not early_stopping:
        return lgb.train({**base, **params}, train, num_boost_round=rounds)
    valid = lgb.Dataset(x[2400:], y[2400:], reference=train)
    return lgb.train(
        {**base, **params},
        train,
        num_boost_round=rounds,
        valid_sets=[valid],
        keep_training_booster=True,  # keeps the trees past the best iteration
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )


@pytest.fixture(scope="module")
def boosters() -> list[lgb.Booster]:
    early = _train({"objective": "regression", "learning_rate": 0.5}, 200, early_stopping=True)
    assert 0 < early.best_iteration < early.num_trees()  # the default predict stops early
    return [
        _train({"objective": "binary"}, 40),
        _train({"objective": "regression", "boosting": "dart"}, 25),
        early,
        lgb.Booster(model_str=_train({"objective": "binary", "max_depth": 2}, 5).model_to_string()),
    ]


@pytest.fixture(scope="module")
def predictors(boosters: list[lgb.Booster]) -> list[tuple[lgb.Booster, SingleRow, SingleRow]]:
    rows = [RowBooster.of(b) for b in boosters]
    return [(b, r.scores(), r.contributions()) for b, r in zip(boosters, rows, strict=True)]


VALUES = st.floats(allow_nan=True, allow_infinity=False, width=64) | st.sampled_from(
    [np.nan, 0.0, -0.0, 2.0, 1e300, -1e300, 5e-324]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=arrays(np.float64, WIDTH, elements=VALUES))
@example(row=np.full(WIDTH, np.nan))
@example(row=np.zeros(WIDTH))
def test_scores_and_contributions_equal_the_package_predict(
    predictors: list[tuple[lgb.Booster, SingleRow, SingleRow]], row: np.ndarray
) -> None:
    for booster, scores, contributions in predictors:
        matrix = row[None, :]
        margin = booster.predict(matrix, raw_score=True)
        np.testing.assert_array_equal(scores(row), margin)
        theirs = booster.predict(matrix, pred_contrib=True)[0]
        np.testing.assert_array_equal(contributions(row), theirs)


def test_many_rows_one_after_another_each_get_their_own_answer(
    predictors: list[tuple[lgb.Booster, SingleRow, SingleRow]],
) -> None:
    """The configurations reuse their output buffers: an answer must not change later."""
    rows = np.random.default_rng(5).normal(size=(500, WIDTH))
    rows[::4, 1] = np.nan
    for booster, scores, contributions in predictors:
        ours = [(scores(r), contributions(r)) for r in rows]
        margins = booster.predict(rows, raw_score=True)
        theirs = booster.predict(rows, pred_contrib=True)
        np.testing.assert_array_equal([s[0] for s, _ in ours], margins)
        np.testing.assert_array_equal([c for _, c in ours], theirs)


def test_a_model_lightgbm_cannot_read_raises_its_message() -> None:
    with pytest.raises(LightGBMCallError, match=r"(?i)model"):
        RowBooster("not a LightGBM model")


def test_the_width_is_the_models() -> None:
    booster = _train({"objective": "binary", "max_depth": 2}, 3)
    rows = RowBooster.of(booster)
    assert rows.width == booster.num_feature() == WIDTH
    with pytest.raises(ValueError, match=f"contiguous float64 row of {WIDTH}"):
        rows.scores()(np.zeros(WIDTH - 1))


def test_the_library_is_the_one_the_package_loaded() -> None:
    from lightgbm.basic import _LIB  # type: ignore[attr-defined]  # the reference: not exported

    assert Path(library_path()).resolve() == Path(_LIB._name).resolve()
