"""One LightGBM model per need: time-split training, calibration, evaluation, MLflow registry.

The training set's snapshot times are split in order: the earliest train, the next stop
training early (validation), the next fit the calibration, the latest test; snapshots within a
label horizon before validation are left out (purged), so no label window of the training rows
reaches into the later ones. Nothing is tuned on the test window. Positives are rare (about 1%
a month), so they are weighted by ``sqrt(negatives / positives)``; the calibration (Platt
scaling of the booster's margin, fitted on its own later window) turns the weighted margins
back into probabilities of applying within the label horizon.

Registered as ``nextbest-<need>``: an MLflow pyfunc (``training.pyfunc_model``) whose
``predict`` returns calibrated probabilities for feature rows as the online store serves them,
with the LightGBM booster (``booster.txt``), the calibration and the feature list as artifacts,
so the API loads the booster itself and explains scores with its contributions.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from training import evaluation, pyfunc_model
from training.input_example import synthetic_example
from training.trainset import TrainingSet

log = logging.getLogger(__name__)

PARAMS: dict[str, Any] = {
    "objective": "binary",
    # Early stopping on AUC alone: with positives weighted, the unweighted validation log loss
    # worsens from the first round (LightGBM does not keep a metric list in order either).
    "metric": "auc",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbosity": -1,
    "seed": 7,
    "num_threads": 2,
}
MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 50
#: Shares of the snapshot times: train (what is left after the purge), validation (early
#: stopping), calibration, test.
SPLIT = (0.50, 0.15, 0.15, 0.20)


def registered_name(need: str) -> str:
    return f"nextbest-{need}"


def experiment_name(need: str) -> str:
    return f"nextbest-{need}"


# --- calibration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """p = 1 / (1 + exp(-(slope * margin + intercept)))."""

    slope: float
    intercept: float
    method: str = "platt"

    def apply(self, margin: np.ndarray) -> np.ndarray:
        return pyfunc_model.platt(margin, self.slope, self.intercept)

    def apply_one(self, margin: float) -> float:
        """``apply`` for one margin, without an array (a decision scores one row per model)."""
        z = self.slope * margin + self.intercept
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)  # never overflows for z < 0
        return e / (1.0 + e)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(float(data["slope"]), float(data["intercept"]), str(data["method"]))

    @classmethod
    def fit(cls, margin: np.ndarray, y: np.ndarray, weight_positive: float) -> Calibration:
        """Platt scaling on a later window; without both classes there, only undo the weight."""
        if len(np.unique(y)) < 2:
            return cls(1.0, -math.log(weight_positive), "prior_shift")
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(np.asarray(margin).reshape(-1, 1), y)
        return cls(float(model.coef_[0][0]), float(model.intercept_[0]))


# --- split ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Windows:
    train: pd.DataFrame
    validation: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    purged: int  # rows dropped between train and validation

    def sizes(self) -> dict[str, int]:
        names = ("train", "validation", "calibration", "test")
        return {**{k: len(getattr(self, k)) for k in names}, "purged": self.purged}


def time_split(
    frame: pd.DataFrame, horizon_days: int, shares: Sequence[float] = SPLIT[1:]
) -> Windows:
    """Split by snapshot time: the latest times test, the ones before calibrate, the ones
    before those stop training early, and training uses only snapshots at least a label horizon
    before validation starts.

    The purge matters: a customer who applies on day D is a positive at every snapshot in the
    30 days before D, with nearly the same features. Without a gap, a model that memorised her
    from the last training snapshots "predicts" her in the next window; early stopping then
    rewards memorising, and the test score decays fast with distance from training.
    """
    times = np.sort(frame["event_timestamp"].unique())
    counts = [max(1, round(len(times) * s)) for s in shares]  # validation, calibration, test
    valid_from = times[len(times) - sum(counts)] if sum(counts) < len(times) else None
    if valid_from is None:
        raise ValueError(f"a time split needs more than {sum(counts)} snapshot times")
    calib_from = times[len(times) - counts[1] - counts[2]]
    test_from = times[len(times) - counts[2]]
    train_until = pd.Timestamp(valid_from) - pd.Timedelta(days=horizon_days)
    stamp = frame["event_timestamp"]
    train = frame[stamp <= train_until]
    if train.empty:
        raise ValueError(
            f"no snapshot is a {horizon_days}-day label horizon before the validation window "
            f"({pd.Timestamp(valid_from).date()}); the training set spans too short a time"
        )
    return Windows(
        train,
        frame[(stamp >= valid_from) & (stamp < calib_from)],
        frame[(stamp >= calib_from) & (stamp < test_from)],
        frame[stamp >= test_from],
        int(((stamp > train_until) & (stamp < valid_from)).sum()),
    )


# --- fitting ----------------------------------------------------------------------------------
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
        self.params = dict(params or PARAMS)
        self.features = data.features
        self.windows = time_split(data.frame, data.horizon_days)
        self.dask_client = dask_client
        for name, part in (("train", self.windows.train), ("validation", self.windows.validation)):
            if part.empty:
                raise ValueError(f"the {name} window is empty")
        self._train: lgb.Dataset | None = None
        self._valid: lgb.Dataset | None = None

    def _datasets(self) -> tuple[lgb.Dataset, lgb.Dataset]:
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
        return self._train, self._valid

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
        weight = math.sqrt((len(y_train) - positives) / positives)
        params = {**self.params, "scale_pos_weight": weight}
        if self.dask_client is not None:
            booster = self._fit_on_dask(label, params)
        else:
            train, valid = self._datasets()
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
            w.train[[*self.features, label]],
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
    keys = rows[["customer_id", "event_timestamp"]]
    joined = keys.merge(other, on=["customer_id", "event_timestamp"], how="left")
    values = joined[column].to_numpy(dtype=np.float64)
    return None if np.isnan(values).any() else values


# --- MLflow -------------------------------------------------------------------------------------
class CalibratedNeedModel(pyfunc_model.CalibratedBooster):
    """What need models were logged as before MLflow logged ``training.pyfunc_model`` itself:
    a pickle that names this class. It stays so that those versions still load."""


@dataclass(frozen=True)
class TrainedModel:
    need: str
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]


def quality_tags(shortfall: str | None) -> dict[str, str]:
    """The registered version's tags saying whether it met the quality floor, and why not."""
    if shortfall is None:
        return {"quality_floor": "met"}
    return {"quality_floor": "below", "quality_floor_reason": shortfall[:5000]}


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_root.mkdir(parents=True, exist_ok=True)
    return str(
        client.create_experiment(name, artifact_location=(artifact_root / name).absolute().as_uri())
    )


def register(
    fitted: FittedNeed,
    data: TrainingSet,
    tracking_uri: str,
    artifact_root: Path,
    alias: str | None,
    tags: Mapping[str, str] | None = None,
    version_tags: Mapping[str, str] | None = None,
) -> TrainedModel:
    """Log the run (parameters, fingerprint, metrics, plots, model), tag the registered version
    with ``version_tags`` and point ``alias`` at it (None: no alias, e.g. below the floor)."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, experiment_name(fitted.need), artifact_root)
    name = registered_name(fitted.need)
    first, last = data.snapshot_window
    metrics = fitted.evaluation.metrics()
    metrics.update({f"rows_{k}": float(v) for k, v in fitted.windows.items()})
    metrics["best_iteration"] = float(fitted.booster.current_iteration())
    metrics["excluded_without_profiling"] = float(data.excluded_without_profiling)
    with mlflow.start_run(experiment_id=experiment_id, tags=dict(tags or {})) as run:
        mlflow.log_params({k: str(v) for k, v in PARAMS.items() if k != "verbosity"})
        mlflow.log_params(
            {
                "need": fitted.need,
                "label_horizon_days": data.horizon_days,
                "training_set_fingerprint": data.fingerprint,
                "feature_views": json.dumps(data.feature_views, sort_keys=True),
                "snapshot_first": first,
                "snapshot_last": last,
                "scale_pos_weight": round(fitted.weight_positive, 4),
                "calibration": fitted.calibration.method,
                "split": ",".join(str(s) for s in SPLIT),
                "feature_count": len(fitted.features),
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_dict(fitted.evaluation.as_dict(), "evaluation.json")
        mlflow.log_dict({"features": fitted.features}, "features.json")
        importance = pd.Series(
            fitted.booster.feature_importance("gain"), index=fitted.booster.feature_name()
        )
        figures = evaluation.plots(
            fitted.need,
            fitted.test_rows["label"].to_numpy(),
            fitted.test_rows["p"].to_numpy(),
            importance,
            fitted.test_rows["oracle"].to_numpy() if "oracle" in fitted.test_rows else None,
        )
        for file, figure in figures.items():
            mlflow.log_figure(figure, f"plots/{file}")
            evaluation.plt.close(figure)
        row, example = synthetic_example(data.frame[fitted.features])
        info = pyfunc_model.log_model(
            fitted.booster,
            fitted.calibration.as_dict(),
            fitted.features,
            {},
            signature=infer_signature(row, fitted.predict(row)),
            input_example=example,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    for key, value in (version_tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)
    return TrainedModel(fitted.need, name, version, run.info.run_id, metrics)
