"""Train a need model from your own customer table: how a bank's data scientist starts.

One row per customer (or per contact), one column holding the outcome, every other column a
candidate feature. ``train_table`` cross-validates a LightGBM model on it, trains the final model
on all rows, calibrates it and registers it in MLflow with an alias.

Text, boolean and categorical columns are LightGBM native categoricals. Each is fixed to the
levels it had in training, and a level's code is its position in that list
(``training.pyfunc_model.encode``; a level not seen in training becomes missing). The booster is
trained on those codes rather than on pandas ``category`` columns, whose levels a new frame
would not share. The encoding is part of the registered model: ``mlflow.pyfunc.load_model``
gives a model whose ``predict`` takes the table's own rows (text as strings) and returns
calibrated probabilities, and whose signature states the table's column types. The levels are
also logged with the run as ``categories.json``.

Positives are weighted by ``sqrt(negatives / positives)`` in training, so the booster's margin
is not a probability. Platt scaling fitted on the cross-validation's out-of-fold margins (each
row scored by the fold model that did not see it) turns the final model's margin into one, as
scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` does.

The model is registered as ``nextbest-table-<need>``, never as ``nextbest-<need>``. The API
serves ``nextbest-<need>``, and those models read the streaming features of
``feature_repo.activity``. A table model reads the bank's own columns, which the API cannot
supply. If it took the served name, moving its alias would make the API load a model whose
inputs it cannot build. Promoting a table model into serving has to be a deliberate step.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from consent.rules.vocabulary import NEEDS
from training import pyfunc_model
from training.calibration import Calibration
from training.input_example import synthetic_example

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
#: Enough lines for csv.Sniffer to tell ';' from ',' without reading the whole file.
SNIFF_BYTES = 64 * 1024
CSV_DELIMITERS = ",;\t|"
LABEL_TRUE = frozenset({"yes", "true", "y", "1"})
LABEL_FALSE = frozenset({"no", "false", "n", "0"})


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


@dataclass(frozen=True)
class CrossValidation:
    roc_auc: list[float]
    pr_auc: list[float]
    best_iterations: list[int]
    #: Each row's margin from the fold model that did not train on it.
    margins: npt.NDArray[np.float64]


def registered_name(need: str) -> str:
    return f"nextbest-table-{need}"


def read_table(path: Path) -> pd.DataFrame:
    """A .csv (separator sniffed: the UCI files use ';'), .parquet or .pq file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace", newline="") as head:
            sample = head.read(SNIFF_BYTES)
        try:
            separator = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
        except csv.Error:  # one column, or too few lines to tell
            separator = ","
        return pd.read_csv(path, sep=separator)
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    raise ValueError(
        f"cannot read {path.name}: expected a .csv, .parquet or .pq file, "
        f"not {suffix or 'a file without a suffix'}"
    )


def label_vector(column: pd.Series) -> npt.NDArray[np.int8]:
    """0/1 from yes/no, true/false, y/n, 1/0 or booleans (case and surrounding spaces ignored)."""
    missing = int(column.isna().sum())
    if missing:
        raise ValueError(f"label {column.name!r} has {missing} missing values")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        unexpected = sorted(set(column.drop_duplicates().tolist()) - {0, 1})
        positive = column.to_numpy() == 1
    else:
        text = column.astype(str).str.strip().str.lower()
        unexpected = sorted(set(text.unique()) - LABEL_TRUE - LABEL_FALSE)
        positive = text.isin(LABEL_TRUE).to_numpy()
    if unexpected:
        shown = ", ".join(repr(value) for value in unexpected[:10])
        more = f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""
        raise ValueError(
            f"label {column.name!r} must be yes/no, true/false, y/n or 1/0; found {shown}{more}"
        )
    labels = positive.astype(np.int8)
    positives = int(labels.sum())
    if positives in (0, len(labels)):
        absent = "positive" if positives == 0 else "negative"
        raise ValueError(f"label {column.name!r} has no {absent} rows; both classes are needed")
    return labels


def category_levels(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The levels of every text, boolean or categorical column, sorted; numbers are not listed.

    Raises ValueError for columns that are neither (dates, for instance): drop or convert them.
    """
    levels: dict[str, list[str]] = {}
    unsupported = []
    for name, column in frame.items():
        if _is_categorical(column):
            levels[str(name)] = sorted(pyfunc_model.as_text(column).dropna().unique())
        elif not pd.api.types.is_numeric_dtype(column):
            unsupported.append(f"{name} ({column.dtype})")
    if unsupported:
        raise ValueError(
            "columns that are neither numbers nor text: "
            + ", ".join(unsupported)
            + "; drop or convert them"
        )
    return levels


def encode_features(
    frame: pd.DataFrame, features: Sequence[str], categories: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """The booster's input as a frame (``training.pyfunc_model.encode``): numbers as float64,
    categorical columns as codes into their levels, missing values and unseen levels NaN."""
    matrix = pyfunc_model.encode(frame, features, categories)
    return pd.DataFrame(matrix, columns=list(features), index=frame.index)


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
        fit = _dataset(features.iloc[fit_rows], labels[fit_rows], categorical)
        stop = fit.create_valid(features.iloc[stop_rows], labels[stop_rows])
        booster = lgb.train(
            {**params, "scale_pos_weight": _balance(labels[fit_rows]), "seed": seed + fold},
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
    final_params = {**PARAMS, "scale_pos_weight": _balance(labels), "seed": seed}
    booster = lgb.train(
        final_params, _dataset(encoded, labels, categorical), num_boost_round=rounds
    )
    calibration = Calibration.fit(cv.margins, labels, _balance(labels))

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
    run_id, version = _register(
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


def _register(
    booster: lgb.Booster,
    calibration: Calibration,
    rows: pd.DataFrame,
    categories: Mapping[str, Sequence[str]],
    name: str,
    alias: str,
    need: str,
    tracking_uri: str,
    artifact_root: Path,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
) -> tuple[str, str]:
    """Log one run with the model, register it and point ``alias`` at the new version.

    ``rows``: the training rows' features, raw; the signature is inferred from them, so it
    states the table's own column types."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_name = f"nextbest-table-{need}"
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(
            experiment_name, artifact_location=artifact_root.absolute().as_uri()
        )
    else:
        experiment_id = experiment.experiment_id
    features = list(rows.columns)
    row, example = synthetic_example(rows)
    example_margin = booster.predict(pyfunc_model.encode(row, features, categories), raw_score=True)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(dict(params))
        mlflow.log_metrics(dict(metrics))
        for file_name, content in (("features.json", features), ("categories.json", categories)):
            mlflow.log_text(json.dumps(content, indent=2), file_name)
        info = pyfunc_model.log_model(
            booster,
            calibration.as_dict(),
            features,
            categories,
            signature=infer_signature(rows, calibration.apply(np.asarray(example_margin))),
            input_example=example,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    return run.info.run_id, version


def _is_categorical(column: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(column)
        or pd.api.types.is_string_dtype(column)
        or pd.api.types.is_bool_dtype(column)
        or isinstance(column.dtype, pd.CategoricalDtype)
    )


def _dataset(
    features: pd.DataFrame, labels: npt.NDArray[np.int8], categorical: Sequence[str]
) -> lgb.Dataset:
    return lgb.Dataset(features, labels, categorical_feature=list(categorical))


def _balance(labels: npt.NDArray[np.int8]) -> float:
    """sqrt(negatives/positives): leans towards the rare class without drowning calibration."""
    positives = int(labels.sum())
    return math.sqrt((len(labels) - positives) / positives)


def _sha256(path: Path) -> str:
    with path.open("rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()
