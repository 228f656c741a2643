"""Fitting one LightGBM model per need on a training set's time split, and its evaluation on
the test window.

Positives are rare (about 1% a month) but are not weighted: on the training benchmark's
validation window, weighting them by ``sqrt(negatives / positives)`` ranked slightly worse. The
calibration (``training.calibration``, fitted on its own later window) turns the margins into
probabilities of applying within the label horizon.

Early stopping on the validation window chooses the number of trees; the served booster is then
fitted with that number on the refit window (``training.time_split``), about twice the training
window's rows on the training benchmark's bank, whose labels still end before calibration
begins. The number is not scaled up with the rows: on the validation window, models refitted on
twice their rows ranked better with the rounds chosen for half of them than with twice as many
(docs/decisions.md, "Refit on every snapshot clear of calibration").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from training import evaluation
from training.calibration import Calibration
from training.time_split import time_split
from training.trainset import END_OF_DAY, TrainingSet

#: A leaf holds at least this share of the training window's rows, within these bounds: large
#: leaves regularise a large bank's models, and a small bank (the demo's) still grows trees
#: (500 rows a leaf left a few thousand rows with a constant model).
LEAF_SHARE = 1 / 160
MIN_LEAF_ROWS = 20
MAX_LEAF_ROWS = 500


def leaf_rows(train_rows: int) -> int:
    """``min_data_in_leaf`` for a training window of ``train_rows``."""
    return int(min(MAX_LEAF_ROWS, max(MIN_LEAF_ROWS, train_rows * LEAF_SHARE)))


PARAMS: dict[str, Any] = {
    "objective": "binary",
    # Early stopping on AUC alone: what ranking is judged by (LightGBM does not keep a metric
    # list in order either). Slow learning, small regularised trees and a long patience: with
    # a faster rate, larger trees and a patience of 50, early stopping ended after a few dozen
    # trees, well short of what the windows hold (docs/models.md has the oracle ratios).
    "metric": "auc",
    "learning_rate": 0.02,
    "num_leaves": 7,
    "min_data_in_leaf": MAX_LEAF_ROWS,  # the default trainer sets ``leaf_rows`` of its window
    "feature_fraction": 0.6,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 10.0,
    "verbosity": -1,
    "seed": 7,
    "num_threads": 2,
}
MAX_ROUNDS = 3000
EARLY_STOPPING_ROUNDS = 200
#: The weight of a positive row (LightGBM's ``scale_pos_weight``).
POSITIVE_WEIGHT = 1.0


@dataclass
class FittedNeed:
    need: str
    booster: lgb.Booster
    calibration: Calibration
    features: list[str]
    weight_positive: float
    evaluation: evaluation.Evaluation
    windows: dict[str, int]
    test_rows: pd.DataFrame  # customer_id, event_timestamp, label, p (calibrated), [oracle]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        margin = self.booster.predict(frame[self.features], raw_score=True)
        return self.calibration.apply(np.asarray(margin))


class Trainer:
    """Fits every need on one training set, binning the features once for all of them."""

    def __init__(
        self,
        data: TrainingSet,
        params: Mapping[str, Any] | None = None,
        dask_client: Any = None,
    ) -> None:
        self.data = data
        self.features = data.features
        self.windows = time_split(data.frame, data.horizon_days)
        self.params = dict(params or PARAMS)
        if params is None:
            self.params["min_data_in_leaf"] = leaf_rows(len(self.windows.train))
        self.dask_client = dask_client
        for name, part in (("train", self.windows.train), ("validation", self.windows.validation)):
            if part.empty:
                raise ValueError(f"the {name} window is empty")
        self._train: lgb.Dataset | None = None
        self._valid: lgb.Dataset | None = None
        self._refit: lgb.Dataset | None = None

    def _datasets(self) -> tuple[lgb.Dataset, lgb.Dataset, lgb.Dataset | None]:
        """Train, validation and refit (None when it holds no more than train), binned once
        with the training window's bins."""
        if self._train is None or self._valid is None:
            w = self.windows
            self._train = lgb.Dataset(
                w.train[self.features], label=np.zeros(len(w.train)), free_raw_data=True
            ).construct()
            self._valid = lgb.Dataset(
                w.validation[self.features],
                label=np.zeros(len(w.validation)),
                reference=self._train,
            ).construct()
            if len(w.refit) > len(w.train):
                self._refit = lgb.Dataset(
                    w.refit[self.features],
                    label=np.zeros(len(w.refit)),
                    reference=self._train,
                ).construct()
        return self._train, self._valid, self._refit

    def fit(
        self,
        need: str,
        truth: pd.DataFrame | None = None,
        groups: pd.DataFrame | None = None,
        threshold: float | None = None,
    ) -> FittedNeed:
        """``truth``: customer_id, event_timestamp, propensity (the generator's, this need);
        ``groups``: customer_id and the attributes to report fairness across."""
        w = self.windows
        label = f"label_{need}"
        y_train = w.train[label].to_numpy()
        y_valid = w.validation[label].to_numpy()
        positives = int(y_train.sum())
        if positives == 0 or positives == len(y_train) or len(np.unique(y_valid)) < 2:
            raise ValueError(f"{need}: the train or validation window lacks positives or negatives")
        weight = POSITIVE_WEIGHT
        params = {**self.params, "scale_pos_weight": weight}
        if self.dask_client is not None:
            booster = self._fit_on_dask(label, params)
        else:
            train, valid, refit = self._datasets()
            train.set_label(y_train)
            valid.set_label(y_valid)
            booster = lgb.train(
                params,
                train,
                num_boost_round=MAX_ROUNDS,
                valid_sets=[valid],
                callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
            )
            booster.free_dataset()
            booster = booster if booster.best_iteration <= 0 else _trimmed(booster)
            if refit is not None:
                refit.set_label(w.refit[label].to_numpy())
                booster = lgb.train(params, refit, num_boost_round=booster.current_iteration())
                booster.free_dataset()
        margin = np.asarray(booster.predict(w.calibration[self.features], raw_score=True))
        calibration = Calibration.fit(margin, w.calibration[label].to_numpy(), weight)

        test = w.test
        p = calibration.apply(np.asarray(booster.predict(test[self.features], raw_score=True)))
        y = test[label].to_numpy()
        oracle = _aligned(test, truth, "propensity") if truth is not None else None
        group_columns = None
        if groups is not None:
            joined = test[["customer_id"]].merge(groups, on="customer_id", how="left")
            group_columns = {c: joined[c] for c in groups.columns if c != "customer_id"}
        result = evaluation.evaluate(y, p, oracle, group_columns, threshold)
        rows = test[["customer_id", "event_timestamp"]].assign(label=y, p=p)
        if oracle is not None:
            rows["oracle"] = oracle
        return FittedNeed(
            need, booster, calibration, self.features, weight, result, w.sizes(), rows
        )

    def _fit_on_dask(self, label: str, params: dict[str, Any]) -> lgb.Booster:
        from training.distributed import train_on_dask

        w = self.windows
        # No early stopping on a cluster: the rounds are chosen on a local sample first.
        sample = w.train.sample(min(len(w.train), 200_000), random_state=7)
        probe = lgb.train(
            params,
            lgb.Dataset(sample[self.features], sample[label]),
            num_boost_round=MAX_ROUNDS,
            valid_sets=[lgb.Dataset(w.validation[self.features], w.validation[label])],
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
        )
        cluster_params = {k: v for k, v in params.items() if k != "scale_pos_weight"}
        return train_on_dask(
            w.refit[[*self.features, label]],
            self.features,
            label,
            cluster_params,
            max(probe.best_iteration, 1),
            self.dask_client,
            weight_positive=params["scale_pos_weight"],
        )


def _trimmed(booster: lgb.Booster) -> lgb.Booster:
    """The booster cut at its best iteration, so every later predict uses exactly that."""
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


def _aligned(rows: pd.DataFrame, other: pd.DataFrame, column: str) -> np.ndarray | None:
    # A snapshot is the end of a day; the generator's truth names it by the midnight after.
    keys = rows[["customer_id", "event_timestamp"]].copy()
    keys["event_timestamp"] = keys["event_timestamp"] + END_OF_DAY
    joined = keys.merge(other, on=["customer_id", "event_timestamp"], how="left")
    values = joined[column].to_numpy(dtype=np.float64)
    return None if np.isnan(values).any() else values
