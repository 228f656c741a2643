"""Need models loaded from the MLflow registry by alias (``champion`` by default).

Each model is the booster, its calibration and its feature list, read from the registered
model's artifacts (see ``training.need_model``). ``ModelSet`` holds what is being served and
``refresh`` follows the alias: a promotion or a rollback in the registry reaches a running API
without a restart, and an unreachable registry leaves the loaded models serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from feature_repo.events import NEEDS
from training.need_model import Calibration, registered_name

log = logging.getLogger(__name__)

#: How many of a model's most important features its actions depend on (for freshness).
DEPENDS_ON_TOP = 10


@dataclass(frozen=True)
class NeedModel:
    need: str
    name: str
    version: str
    run_id: str
    booster: lgb.Booster
    calibration: Calibration
    features: tuple[str, ...]

    def score(self, values: Mapping[str, float | None]) -> tuple[float, list[tuple[str, float]]]:
        """Calibrated probability and each feature's contribution to the margin, largest first."""
        row = np.array(
            [[np.nan if values.get(f) is None else values[f] for f in self.features]], dtype=float
        )
        contributions = self.booster.predict(row, pred_contrib=True)[0]
        probability = float(self.calibration.apply(np.array([contributions.sum()]))[0])
        ranked = sorted(zip(self.features, contributions[:-1], strict=True), key=lambda x: -x[1])
        return probability, [(name, float(c)) for name, c in ranked]

    @cached_property
    def depends_on(self) -> frozenset[str]:
        """The model's most important features (by total gain): if one of them is stale, the
        gate withholds the need's actions rather than deciding on a guess."""
        gains = self.booster.feature_importance("gain")
        ranked = sorted(zip(self.features, gains, strict=True), key=lambda x: -x[1])
        return frozenset(name for name, gain in ranked[:DEPENDS_ON_TOP] if gain > 0)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for rows of features in ``self.features`` order."""
        return self.calibration.apply(np.asarray(self.booster.predict(matrix, raw_score=True)))


def load_version(client: MlflowClient, need: str, version: str) -> NeedModel:
    name = registered_name(need)
    details = client.get_model_version(name, version)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    artifacts = folder / "artifacts"
    return NeedModel(
        need,
        name,
        str(details.version),
        str(details.run_id),
        lgb.Booster(model_file=str(artifacts / "booster.txt")),
        Calibration.from_dict(json.loads((artifacts / "calibration.json").read_text())),
        tuple(json.loads((artifacts / "features.json").read_text())),
    )


class ModelSet(Mapping[str, NeedModel]):
    """The models being served, following ``alias`` in the registry. Reads see one consistent
    dict; ``refresh`` swaps in changed versions and never drops a loaded model on an error."""

    def __init__(self, tracking_uri: str, alias: str, needs: tuple[str, ...] = NEEDS) -> None:
        self.tracking_uri = tracking_uri
        self.alias = alias
        self.needs = needs
        self._models: dict[str, NeedModel] = {}
        self._lock = threading.Lock()

    def __getitem__(self, need: str) -> NeedModel:
        return self._models[need]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._models))

    def __len__(self) -> int:
        return len(self._models)

    def snapshot(self) -> dict[str, NeedModel]:
        """The models as one consistent set (a refresh replaces the dict, never mutates it)."""
        return self._models

    def items(self):  # type: ignore[no-untyped-def,override]
        return self._models.items()

    def values(self):  # type: ignore[no-untyped-def,override]
        return self._models.values()

    def versions(self) -> dict[str, str]:
        return {need: m.version for need, m in self._models.items()}

    def refresh(self) -> dict[str, str]:
        """Load whatever the alias points at now; returns the needs that changed (need ->
        version, "" when the alias was removed)."""
        with self._lock:
            mlflow.set_tracking_uri(self.tracking_uri)
            client = MlflowClient(self.tracking_uri)
            current = dict(self._models)
            changed: dict[str, str] = {}
            for need in self.needs:
                name = registered_name(need)
                try:
                    version = str(client.get_model_version_by_alias(name, self.alias).version)
                except MlflowException as error:
                    if _missing(error):
                        if need in current:
                            del current[need]
                            changed[need] = ""
                        continue
                    log.warning("model registry unreachable, keeping %s: %s", need, error)
                    continue
                except Exception as error:  # a registry that cannot be reached at all
                    log.warning("model registry unreachable, keeping %s: %s", need, error)
                    continue
                loaded = current.get(need)
                if loaded is not None and loaded.version == version:
                    continue
                try:
                    current[need] = load_version(client, need, version)
                except Exception as error:
                    log.error(
                        "could not load %s version %s, keeping the loaded one: %s",
                        name,
                        version,
                        error,
                    )
                    continue
                changed[need] = version
                log.info("serving %s version %s (%s)", name, version, self.alias)
            self._models = current
            return changed


def _missing(error: MlflowException) -> bool:
    return error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class ModelRefresher:
    """Refreshes a ``ModelSet`` every ``interval`` seconds in a daemon thread (0: never), so a
    promotion or a rollback in the registry reaches a running process without a restart."""

    def __init__(self, models: ModelSet, interval: float) -> None:
        self.models = models
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.models.refresh()
            except Exception:  # never let the refresher die; the loaded models keep serving
                log.exception("model refresh failed; keeping the loaded models")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
