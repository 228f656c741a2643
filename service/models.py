"""Need models loaded from the MLflow registry by alias (``champion`` by default)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import lightgbm as lgb
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training.need_model import registered_name

log = logging.getLogger(__name__)

NEEDS = ("mortgage",)


@dataclass(frozen=True)
class NeedModel:
    need: str
    name: str
    version: str
    run_id: str
    booster: lgb.Booster
    features: tuple[str, ...]

    def score(self, values: dict[str, float | None]) -> tuple[float, list[tuple[str, float]]]:
        """Probability and each feature's contribution to the margin, largest first."""
        row = np.array(
            [[np.nan if values.get(f) is None else values[f] for f in self.features]], dtype=float
        )
        probability = float(self.booster.predict(row)[0])
        contributions = self.booster.predict(row, pred_contrib=True)[0][:-1]
        ranked = sorted(zip(self.features, contributions, strict=True), key=lambda x: -x[1])
        return probability, [(name, float(c)) for name, c in ranked]


def load_models(
    tracking_uri: str, alias: str, needs: tuple[str, ...] = NEEDS
) -> dict[str, NeedModel]:
    """Every need whose registered model has ``alias``; needs without one are left out."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    loaded = {}
    for need in needs:
        name = registered_name(need)
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            log.warning("no %s model with alias %r: that need is not scored", need, alias)
            continue
        booster = mlflow.lightgbm.load_model(f"models:/{name}@{alias}")
        features = tuple(
            json.loads(mlflow.artifacts.load_text(f"runs:/{version.run_id}/features.json"))
        )
        loaded[need] = NeedModel(
            need, name, str(version.version), str(version.run_id), booster, features
        )
    return loaded
