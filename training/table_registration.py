"""A table model in MLflow: its run (parameters, metrics, features and levels), the registered
model and the alias pointing at the new version.

The encoding is part of the registered model: ``mlflow.pyfunc.load_model`` gives a model whose
``predict`` takes the table's own rows (text as strings) and returns calibrated probabilities,
and whose signature states the table's column types. The levels are also logged with the run as
``categories.json``.

The model is registered as ``nextbest-table-<need>``, never as ``nextbest-<need>``. The API
serves ``nextbest-<need>``, and those models read the streaming features of
``feature_repo.activity``. A table model reads the bank's own columns, which the API cannot
supply. If it took the served name, moving its alias would make the API load a model whose
inputs it cannot build. Promoting a table model into serving has to be a deliberate step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from training import pyfunc_model
from training.calibration import Calibration
from training.input_example import synthetic_example


def registered_name(need: str) -> str:
    return f"nextbest-table-{need}"


def register(
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
