"""LightGBM on a bank's table: the booster's parameters, its datasets, the weight of the rare
class, and the stratified cross-validation whose out-of-fold margins calibrate the final model.

Positives are weighted by ``sqrt(negatives / positives)`` in training, so the booster's margin
is not a probability. Platt scaling fitted on the cross-validation's out-of-fold margins (each
row scored by the fold model that did not see it) turns the final model's margin into one, as
scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": "auc",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 2,
    # Same data, seed and thread count, same model: LightGBM otherwise picks row- or column-wise
    # histograms by timing them, which can change the result from one run to the next.
    "deterministic": True,
    "force_col_wise": True,
    "verbosity": -1,
}
MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 50
#: Share of each fold's training rows held back to stop boosting; the test fold is never seen.
INNER_VALIDATION_FRACTION = 0.15


@dataclass(frozen=True)
class CrossValidation:
    roc_auc: list[float]
    pr_auc: list[float]
    best_iterations: list[int]
    #: Each row's margin from the fold model that did not train on it.
    margins: npt.NDArray[np.float64]


def cross_validate(
    features: pd.DataFrame,
    labels: npt.NDArray[np.int8],
    categorical: Sequence[str],
    params: Mapping[str, Any],
    folds: int,
    seed: int,
) -> CrossValidation:
    """Stratified k-fold; each fold stops boosting on a split of its own training rows."""
    roc_auc, pr_auc, best = [], [], []
    margins = np.full(len(labels), np.nan)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train_rows, test_rows) in enumerate(splitter.split(features, labels)):
        fit_rows, stop_rows = train_test_split(
            train_rows,
            test_size=INNER_VALIDATION_FRACTION,
            stratify=labels[train_rows],
            random_state=seed + fold,
        )
        fit = dataset(features.iloc[fit_rows], labels[fit_rows], categorical)
        stop = fit.create_valid(features.iloc[stop_rows], labels[stop_rows])
        booster = lgb.train(
            {**params, "scale_pos_weight": balance(labels[fit_rows]), "seed": seed + fold},
            fit,
            num_boost_round=MAX_ROUNDS,
            valid_sets=[stop],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
        )
        margin = booster.predict(
            features.iloc[test_rows], num_iteration=booster.best_iteration, raw_score=True
        )
        margins[test_rows] = margin
        roc_auc.append(float(roc_auc_score(labels[test_rows], margin)))
        pr_auc.append(float(average_precision_score(labels[test_rows], margin)))
        best.append(int(booster.best_iteration))
    return CrossValidation(roc_auc, pr_auc, best, margins)


def dataset(
    features: pd.DataFrame, labels: npt.NDArray[np.int8], categorical: Sequence[str]
) -> lgb.Dataset:
    """The booster's training data, its categorical columns declared as such."""
    return lgb.Dataset(features, labels, categorical_feature=list(categorical))


def balance(labels: npt.NDArray[np.int8]) -> float:
    """sqrt(negatives/positives): leans towards the rare class without drowning calibration."""
    positives = int(labels.sum())
    return math.sqrt((len(labels) - positives) / positives)
