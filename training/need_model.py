"""Need models in MLflow: one LightGBM model per need, registered as ``nextbest-<need>``.

Fitted by ``training.fitting`` on the time split of ``training.time_split`` and calibrated by
``training.calibration``; registered here as an MLflow pyfunc (``training.pyfunc_model``) whose
``predict`` returns calibrated probabilities for feature rows as the online store serves them,
with the LightGBM booster (``booster.txt``), the calibration and the feature list as artifacts,
so the API loads the booster itself and explains scores with its contributions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from training import evaluation, pyfunc_model
from training.artifact_digest import DIGEST_TAG, version_digest
from training.fitting import PARAMS, FittedNeed
from training.input_example import synthetic_example
from training.time_split import SPLIT
from training.trainset import TrainingSet


def registered_name(need: str) -> str:
    return f"nextbest-{need}"


def experiment_name(need: str) -> str:
    return f"nextbest-{need}"


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
            plt.close(figure)
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
    tags = {**(version_tags or {}), DIGEST_TAG: version_digest(name, version)}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)
    return TrainedModel(fitted.need, name, version, run.info.run_id, metrics)
