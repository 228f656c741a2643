"""The model MLflow loads for every NextBest model: a LightGBM booster, the encoding of its raw
input and its calibration, behind ``mlflow.pyfunc``'s ``predict``.

``predict`` takes raw rows (a pandas DataFrame: text columns as strings, numbers as numbers)
and returns calibrated probabilities. Categorical columns are encoded here, inside the model:
each is fixed to the levels it had in training (the ``categories`` artifact), a level's code is
its position in that list, and a level not seen in training, like a missing value, is missing
to LightGBM.

MLflow logs this file itself with each model ("models from code": ``set_model`` at the end)
rather than a pickle of a NextBest class, and ``mlflow.pyfunc.load_model`` runs it from the
model's folder. So a model loads wherever MLflow, LightGBM, pandas and NumPy are installed,
NextBest or not, which is why this file imports nothing from NextBest. NextBest imports the
encoding and the calibration from here, so training, this model and the API's own scoring
share one definition of each.

Artifacts (file names as the API reads them, ``service.adapters.models``): ``booster`` (LightGBM's
text format), ``calibration`` (JSON: slope and intercept of the margin's Platt scaling),
``features`` (JSON: the input columns in the booster's order) and, for a model with
categorical columns, ``categories`` (JSON: column -> its levels in training).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc.model import PythonModel


def platt(margin: Any, slope: float, intercept: float) -> np.ndarray:
    """p = 1 / (1 + exp(-(slope * margin + intercept)))."""
    z = slope * np.asarray(margin, dtype=np.float64) + intercept
    return 1.0 / (1.0 + np.exp(-z))


def as_text(column: pd.Series) -> pd.Series:
    """One spelling per level for training and scoring alike (True -> "True", 3 -> "3")."""
    return column.astype("string")


def encode(
    frame: pd.DataFrame, features: Sequence[str], categories: Mapping[str, Sequence[str]]
) -> np.ndarray:
    """The booster's input, one row per row of ``frame``: numbers as float64, categorical
    columns as codes into their levels. Missing values, levels not seen in training and
    columns ``frame`` lacks (MLflow lets a caller leave out an optional one) are NaN."""
    matrix = np.full((len(frame), len(features)), np.nan)
    for i, name in enumerate(features):
        if name not in frame.columns:
            continue
        column = frame[name]
        if name in categories:
            codes = pd.Categorical(as_text(column), categories=list(categories[name])).codes
            matrix[:, i] = np.where(codes < 0, np.nan, codes)
        else:
            matrix[:, i] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return matrix


class CalibratedBooster(PythonModel):
    """``predict``: calibrated probabilities for raw rows."""

    def load_context(self, context: Any) -> None:
        artifacts = context.artifacts
        self.booster = lgb.Booster(model_file=artifacts["booster"])
        calibration = json.loads(Path(artifacts["calibration"]).read_text())
        self.slope = float(calibration["slope"])
        self.intercept = float(calibration["intercept"])
        self.features = json.loads(Path(artifacts["features"]).read_text())
        # A model without categorical columns (every need model) has none.
        path = artifacts.get("categories")
        self.categories = json.loads(Path(path).read_text()) if path else {}

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        matrix = encode(model_input, self.features, self.categories)
        return platt(self.booster.predict(matrix, raw_score=True), self.slope, self.intercept)


def log_model(
    booster: lgb.Booster,
    calibration: Mapping[str, Any],
    features: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    *,
    signature: ModelSignature,
    input_example: pd.DataFrame | None,
    registered_model_name: str,
) -> ModelInfo:
    """Log a ``CalibratedBooster`` as ``model`` in the active run and register it."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        files = {
            "booster": ("booster.txt", booster.model_to_string()),
            "calibration": ("calibration.json", json.dumps(dict(calibration))),
            "features": ("features.json", json.dumps(list(features))),
        }
        if categories:
            levels = {name: list(values) for name, values in categories.items()}
            files["categories"] = ("categories.json", json.dumps(levels))
        artifacts = {}
        for key, (file_name, text) in files.items():
            (folder / file_name).write_text(text)
            artifacts[key] = str(folder / file_name)
        # mlflow declares no return type for log_model; it returns a ModelInfo (see its docs).
        info: ModelInfo = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__)),
            artifacts=artifacts,
            signature=signature,
            input_example=input_example,
            pip_requirements=[
                f"lightgbm=={lgb.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
            ],
            registered_model_name=registered_model_name,
        )
        return info


mlflow.models.set_model(CalibratedBooster())
