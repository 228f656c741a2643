"""Train a need model from your own customer table: how a bank's data scientist starts.

One row per customer (or per contact), one column holding the outcome, every other column a
candidate feature. ``train_table`` cross-validates a LightGBM model on it, trains the final model
on all rows, calibrates it and registers it in MLflow with an alias. The table's columns
(``training.table_columns``), the boosting and cross-validation (``training.table_boosting``)
and the registration (``training.table_registration``) each have a module of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from consent.rules.vocabulary import NEEDS
from training.calibration import Calibration
from training.table_boosting import (
    EARLY_STOPPING_ROUNDS,
    INNER_VALIDATION_FRACTION,
    MAX_ROUNDS,
    PARAMS,
    balance,
    cross_validate,
    dataset,
)
from training.table_columns import category_levels, encode_features, label_vector, read_table
from training.table_registration import register, registered_name


@dataclass(frozen=True)
class TableReport:
    need: str
    name: str  # registered model name
    version: str  # registered model version
    run_id: str
    rows: int
    positives: int
    features: list[str]
    categorical: list[str]
    cv_roc_auc: list[float]  # one per fold
    cv_roc_auc_mean: float
    cv_roc_auc_std: float
    cv_pr_auc_mean: float
    best_iterations: list[int]
    calibration: dict[str, Any]  # Platt scaling of the margin, fitted out of fold


def train_table(
    path: Path,
    label: str,
    need: str,
    drop: Sequence[str],
    tracking_uri: str,
    artifact_root: Path,
    *,
    model_name: str | None = None,
    alias: str = "champion",
    folds: int = 5,
    seed: int = 7,
) -> TableReport:
    """Cross-validate, train on all rows and register the model with ``alias``."""
    if need not in NEEDS:
        raise ValueError(f"unknown need {need!r}; expected one of {', '.join(NEEDS)}")
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, not {folds}")
    table = read_table(path)
    if label not in table.columns:
        raise ValueError(f"label column {label!r} is not in {path.name}")
    missing = [name for name in drop if name not in table.columns]
    if missing:
        raise ValueError(f"columns to drop are not in {path.name}: {', '.join(missing)}")
    features = [str(name) for name in table.columns if name != label and name not in drop]
    if not features:
        raise ValueError(f"no feature columns left in {path.name} after the label and drops")

    labels = label_vector(table[label])
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} rows of each class; "
            f"{path.name} has {positives} positive of {len(labels)}"
        )
    categories = category_levels(table[features])
    categorical = list(categories)
    encoded = encode_features(table, features, categories)

    cv = cross_validate(encoded, labels, categorical, PARAMS, folds, seed)
    rounds = max(1, round(float(np.median(cv.best_iterations))))
    final_params = {**PARAMS, "scale_pos_weight": balance(labels), "seed": seed}
    booster = lgb.train(final_params, dataset(encoded, labels, categorical), num_boost_round=rounds)
    calibration = Calibration.fit(cv.margins, labels, balance(labels))

    name = model_name or registered_name(need)
    metrics = {
        "cv_roc_auc_mean": float(np.mean(cv.roc_auc)),
        "cv_roc_auc_std": float(np.std(cv.roc_auc)),
        "cv_pr_auc_mean": float(np.mean(cv.pr_auc)),
    }
    metrics.update({f"cv_roc_auc_fold_{i}": auc for i, auc in enumerate(cv.roc_auc)})
    params = {
        "need": need,
        "label": label,
        "dropped": json.dumps(list(drop)),
        "source": path.name,
        "data_sha256": _sha256(path),
        "rows": len(labels),
        "positives": positives,
        "folds": folds,
        "max_rounds": MAX_ROUNDS,
        "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
        "inner_validation_fraction": INNER_VALIDATION_FRACTION,
        "num_boost_round": rounds,
        "calibration": calibration.method,
        **final_params,
    }
    run_id, version = register(
        booster,
        calibration,
        table[features],
        categories,
        name,
        alias,
        need,
        tracking_uri,
        artifact_root,
        params=params,
        metrics=metrics,
    )
    return TableReport(
        need=need,
        name=name,
        version=version,
        run_id=run_id,
        rows=len(labels),
        positives=positives,
        features=features,
        categorical=categorical,
        cv_roc_auc=cv.roc_auc,
        cv_roc_auc_mean=metrics["cv_roc_auc_mean"],
        cv_roc_auc_std=metrics["cv_roc_auc_std"],
        cv_pr_auc_mean=metrics["cv_pr_auc_mean"],
        best_iterations=cv.best_iterations,
        calibration=calibration.as_dict(),
    )


def _sha256(path: Path) -> str:
    with path.open("rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()
