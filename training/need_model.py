"""Train a LightGBM need model on a point-in-time training set and register it in MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score, roc_auc_score

from training.trainset import TrainingSet

PARAMS = {
    "objective": "binary",
    "metric": ["binary_logloss", "auc"],
    "first_metric_only": True,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbosity": -1,
    "seed": 7,
    "num_threads": 2,
}
MAX_ROUNDS = 400
EARLY_STOPPING_ROUNDS = 30


def registered_name(need: str) -> str:
    return f"nextbest-{need}"


@dataclass(frozen=True)
class TrainedModel:
    need: str
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]


def time_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train on the earliest snapshots, stop early on the next, test on the latest."""
    times = np.sort(frame["event_timestamp"].unique())
    if len(times) < 3:
        raise ValueError("need at least three snapshot times for a time-based split")
    cut_valid = times[int(len(times) * 0.6)]
    cut_test = times[max(int(len(times) * 0.8), int(len(times) * 0.6) + 1)]
    train = frame[frame["event_timestamp"] < cut_valid]
    valid = frame[(frame["event_timestamp"] >= cut_valid) & (frame["event_timestamp"] < cut_test)]
    test = frame[frame["event_timestamp"] >= cut_test]
    return train, valid, test


def _safe_auc(y: pd.Series, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if y.nunique() == 2 else float("nan")


def train_and_register(
    data: TrainingSet, tracking_uri: str, artifact_root: Path, alias: str = "champion"
) -> TrainedModel:
    features = data.features
    train, valid, test = time_split(data.frame)
    for part, name in ((train, "train"), (valid, "validation")):
        if part["label"].nunique() < 2:
            raise ValueError(f"the {name} window has no positive or no negative examples")
    booster = lgb.train(
        PARAMS,
        lgb.Dataset(train[features], train["label"]),
        num_boost_round=MAX_ROUNDS,
        valid_sets=[lgb.Dataset(valid[features], valid["label"])],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    predicted = np.asarray(booster.predict(test[features], num_iteration=booster.best_iteration))
    metrics = {
        "test_roc_auc": _safe_auc(test["label"], predicted),
        "test_pr_auc": float(average_precision_score(test["label"], predicted))
        if test["label"].any()
        else float("nan"),
        "test_base_rate": float(test["label"].mean()),
        "best_iteration": float(booster.best_iteration),
        "rows_train": float(len(train)),
        "rows_validation": float(len(valid)),
        "rows_test": float(len(test)),
        "excluded_without_profiling": float(data.excluded_without_profiling),
    }

    mlflow.set_tracking_uri(tracking_uri)
    experiment_name = f"nextbest-{data.need}"
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(
            experiment_name, artifact_location=artifact_root.absolute().as_uri()
        )
    else:
        experiment_id = experiment.experiment_id
    name = registered_name(data.need)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({k: v for k, v in PARAMS.items() if k != "verbosity"})
        mlflow.log_params(
            {
                "need": data.need,
                "label_horizon_days": data.horizon_days,
                "training_set_fingerprint": data.fingerprint,
                "snapshot_first": str(data.frame["event_timestamp"].min()),
                "snapshot_last": str(data.frame["event_timestamp"].max()),
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if not np.isnan(v)})
        mlflow.log_text(json.dumps(features), "features.json")
        example = test[features].head(5)
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(example, booster.predict(example)),
            input_example=example,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    return TrainedModel(data.need, name, version, run.info.run_id, metrics)
