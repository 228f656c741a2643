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
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import lightgbm as lgb
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from consent.rules.vocabulary import NEEDS
from service.adapters.lightgbm_rows import RowBooster, SingleRow
from training.artifact_digest import folder_digest
from training.calibration import Calibration
from training.need_model import registered_name
from training.quality import QualityFloor

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
    #: The digest of the artifact files loaded (``training.artifact_digest``).
    digest: str = ""

    def row(self, values: Mapping[str, float | None]) -> np.ndarray:
        """The model's input: ``values`` in its feature order, NaN where missing. Models with
        the same feature list can share one row."""
        return np.fromiter(
            (np.nan if (v := values.get(f)) is None else v for f in self.features),
            dtype=np.float64,
            count=len(self.features),
        )

    def probability(self, row: np.ndarray) -> float:
        """The calibrated probability for one row (see ``row``)."""
        return self.calibration.apply_one(float(self._raw(row)[0]))

    def probability_each(self, rows: np.ndarray) -> list[float]:
        """``probability`` of each of ``rows``: the margins predicted at once (the same
        margins as row by row), calibrated one by one as ``probability`` calibrates."""
        margins = np.asarray(self.booster.predict(rows, raw_score=True), np.float64)
        return [self.calibration.apply_one(m) for m in margins.tolist()]

    def contributions(self, row: np.ndarray) -> list[tuple[str, float]]:
        """Each feature's contribution to the margin (LightGBM's SHAP values), largest first."""
        contributions = self._contrib(row)
        ranked = sorted(zip(self.features, contributions[:-1], strict=True), key=lambda x: -x[1])
        return [(name, float(c)) for name, c in ranked]

    def score(self, values: Mapping[str, float | None]) -> tuple[float, list[tuple[str, float]]]:
        """Calibrated probability and each feature's contribution to the margin, largest first."""
        row = self.row(values)
        return self.probability(row), self.contributions(row)

    @cached_property
    def _rows(self) -> RowBooster:
        return RowBooster.of(self.booster)

    @cached_property
    def _raw(self) -> SingleRow:
        return self._rows.scores()

    @cached_property
    def _contrib(self) -> SingleRow:
        return self._rows.contributions()

    @cached_property
    def depends_on(self) -> frozenset[str]:
        """The model's most important features (by total gain): if one of them is stale, the
        gate withholds the need's actions rather than deciding on a guess."""
        gains = self.booster.feature_importance("gain")
        ranked = sorted(zip(self.features, gains, strict=True), key=lambda x: -x[1])
        return frozenset(name for name, gain in ranked[:DEPENDS_ON_TOP] if gain > 0)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of many rows (``row``), as ``probability`` gives each."""
        return self.predict(rows)

    def contributions_of(self, rows: np.ndarray) -> np.ndarray:
        """Each row's contribution per feature (LightGBM's SHAP values), in ``features`` order."""
        return np.asarray(self.booster.predict(rows, pred_contrib=True))[:, :-1]

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for rows of features in ``self.features`` order."""
        return self.calibration.apply(np.asarray(self.booster.predict(matrix, raw_score=True)))


@dataclass(frozen=True)
class Downloaded:
    """A version's artifact files, downloaded, and their digest: checked before anything in
    them is parsed (a changed booster file can abort LightGBM's parser, not just fail it)."""

    need: str
    name: str
    version: str
    run_id: str
    folder: Path
    digest: str


def download_version(client: MlflowClient, need: str, version: str) -> Downloaded:
    name = registered_name(need)
    details = client.get_model_version(name, version)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return Downloaded(
        need, name, str(details.version), str(details.run_id), folder, folder_digest(folder)
    )


def load_downloaded(files: Downloaded) -> NeedModel:
    artifacts = files.folder / "artifacts"
    return NeedModel(
        files.need,
        files.name,
        files.version,
        files.run_id,
        lgb.Booster(model_file=str(artifacts / "booster.txt")),
        Calibration.from_dict(json.loads((artifacts / "calibration.json").read_text())),
        tuple(json.loads((artifacts / "features.json").read_text())),
        files.digest,
    )


def load_version(client: MlflowClient, need: str, version: str) -> NeedModel:
    return load_downloaded(download_version(client, need, version))


class Provenance(Protocol):
    """Whether a version may be served: promoted by NextBest with the digest of its files
    (``service.usecases.promotion.Promotions``)."""

    def check(self, name: str, version: str, alias: str, digest: str) -> str | None:
        """Why not, or None."""
        ...

    def refused(self, name: str, version: str, alias: str, digest: str, why: str) -> None:
        """Record that it was not served, and why."""
        ...


class ModelSet(Mapping[str, NeedModel]):
    """The models being served, following ``alias`` in the registry. Reads see one consistent
    dict; ``refresh`` swaps in changed versions and never drops a loaded model on an error."""

    def __init__(
        self,
        tracking_uri: str,
        alias: str,
        needs: tuple[str, ...] = NEEDS,
        floor: QualityFloor | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.alias = alias
        self.needs = needs
        self.floor = floor or QualityFloor()
        #: Checked before a version is served (None: not checked; only tests that read a
        #: registry without an audit log leave it out).
        self.provenance = provenance
        self._models: dict[str, NeedModel] = {}
        #: Versions the alias points at that are below the floor: need -> (version, why).
        self._refused: dict[str, tuple[str, str]] = {}
        #: Versions not served because their promotion could not be checked (yet).
        self._unchecked: dict[str, str] = {}
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

    def items(self) -> ItemsView[str, NeedModel]:
        return self._models.items()

    def values(self) -> ValuesView[NeedModel]:
        return self._models.values()

    def versions(self) -> dict[str, str]:
        return {need: m.version for need, m in self._models.items()}

    def unchecked(self) -> dict[str, str]:
        """Needs whose aliased version is not served because the audit log, which proves its
        promotion, could not be read."""
        return dict(self._unchecked)

    def refused(self) -> dict[str, str]:
        """Needs whose aliased version is not served because it is below the quality floor."""
        return {need: f"version {v}: {why}" for need, (v, why) in self._refused.items()}

    def refresh(self) -> dict[str, str]:
        """Load whatever the alias points at now; returns the needs that changed (need ->
        version, "" when the alias was removed)."""
        with self._lock:
            mlflow.set_tracking_uri(self.tracking_uri)
            client = MlflowClient(self.tracking_uri)
            current = dict(self._models)
            changed: dict[str, str] = {}
            for need in self.needs:
                try:
                    version = self._aliased_version(client, registered_name(need))
                except _RegistryUnreachable as error:
                    log.warning("model registry unreachable, keeping the loaded models: %s", error)
                    break
                if version is None:  # the alias was removed
                    self._refused.pop(need, None)
                    if current.pop(need, None) is not None:
                        changed[need] = ""
                    continue
                self._take(client, need, version, current, changed)
            self._models = current
            return changed

    def _aliased_version(self, client: MlflowClient, name: str) -> str | None:
        try:
            return str(client.get_model_version_by_alias(name, self.alias).version)
        except MlflowException as error:
            if _missing(error):
                return None
            raise _RegistryUnreachable(str(error)) from error
        except Exception as error:  # a registry that cannot be reached at all
            # One bounded wait per refresh (service/__init__.py), not one per need.
            raise _RegistryUnreachable(str(error)) from error

    def _take(
        self,
        client: MlflowClient,
        need: str,
        version: str,
        current: dict[str, NeedModel],
        changed: dict[str, str],
    ) -> None:
        """Put ``version`` of ``need`` into ``current`` unless it is there already, below the
        quality floor, or fails to load (then the loaded one stays)."""
        loaded = current.get(need)
        if loaded is not None and loaded.version == version:
            return
        if self._refused.get(need, ("",))[0] == version:
            return  # below the floor, and said so when the alias moved to it
        name = registered_name(need)
        try:
            shortfall = self._shortfall(client, name, version)
            if shortfall is not None:
                # The alias was moved to it on purpose: the earlier version is not served
                # instead, the need's actions are withheld (NO_MODEL).
                log.error("not serving %s version %s: %s", name, version, shortfall)
                self._refused[need] = (version, shortfall)
                if current.pop(need, None) is not None:
                    changed[need] = ""
                return
            files = download_version(client, need, version)
            try:
                refusal = self._unproven(files)
            except Exception as error:  # the audit log unreadable: asked again next refresh
                self._unchecked[need] = f"version {version}: its promotion could not be checked"
                log.error("not serving %s version %s: %s", name, version, error)
                return
            self._unchecked.pop(need, None)
            if refusal is not None:
                self._refused[need] = (version, refusal)
                if current.pop(need, None) is not None:
                    changed[need] = ""
                return
            current[need] = load_downloaded(files)
        except Exception as error:
            log.error(
                "could not load %s version %s, keeping the loaded one: %s", name, version, error
            )
            return
        changed[need] = version
        self._refused.pop(need, None)
        log.info("serving %s version %s (%s)", name, version, self.alias)

    def _unproven(self, files: Downloaded) -> str | None:
        """Why a version must not be served although the alias points at it: not promoted by
        NextBest, or its files are not those promoted (recorded in the audit log)."""
        if self.provenance is None:
            return None
        why = self.provenance.check(files.name, files.version, self.alias, files.digest)
        if why is not None:
            log.error("not serving %s version %s: %s", files.name, files.version, why)
            self.provenance.refused(files.name, files.version, self.alias, files.digest, why)
        return why

    def _shortfall(self, client: MlflowClient, name: str, version: str) -> str | None:
        """Why the version is below the floor, from its training run's test metrics."""
        run_id = client.get_model_version(name, version).run_id
        if run_id is None:
            return self.floor.shortfall(None, None)
        return self.floor.shortfall_of_run(client.get_run(run_id).data.metrics)


class _RegistryUnreachable(Exception):
    """The registry did not answer: a refresh keeps every loaded model."""


def _missing(error: MlflowException) -> bool:
    return error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class ModelRefresher:
    """Refreshes a ``ModelSet`` every ``interval`` seconds in a daemon thread (0: never), so a
    promotion or a rollback in the registry reaches a running process without a restart."""

    def __init__(self, models: ModelSet | Callable[[], ModelSet], interval: float) -> None:
        #: The models, or how to get them: the stream worker's are loaded in the refresher's
        #: thread, so a registry that cannot be opened yet never stops the worker.
        self._models = models
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

    @property
    def models(self) -> ModelSet:
        if not isinstance(self._models, ModelSet):
            self._models = self._models()
        return self._models

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
