"""The retraining job: train challengers, compare them with the champions, promote or not.

For every need: a challenger is trained on a fresh point-in-time training set and registered
with the alias ``challenger``. The champion (the version behind ``champion``) is scored on the
*same* holdout rows: the challenger's test window, the latest snapshots. The challenger never
saw them; an older champion saw them only if the data has not moved on since it was trained,
which can only favour the champion (the safe direction).

The challenger is promoted only when

- it meets the quality floor on its test window (``training/quality.py``, set by
  ``NEXTBEST_MODEL_MIN_ROC_AUC`` and ``NEXTBEST_MODEL_MIN_TOP_DECILE_LIFT``): a model no better
  than chance is never promoted, not even as a need's first model;
- its ROC AUC on that holdout beats the champion's by at least ``min_gain``, and
- the fairness check passes: for each attribute (gender, age band) its selection-rate ratio at
  the delivery threshold is not more than ``fairness_tolerance`` below the champion's (no new
  disparity). A need without a champion promotes its first model; its ratios are recorded.

Promotion moves ``champion`` to the challenger and ``previous-champion`` to the old champion;
``rollback`` moves ``champion`` back. Every verdict, with its reason, is written to the
``nextbest-retrain`` MLflow experiment and as tags on the challenger's model version. Running
APIs follow the alias (``NEXTBEST_MODEL_REFRESH_SECONDS``), so neither step needs a restart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from consent.rules.vocabulary import NEEDS
from service.adapters.models import download_version, load_version
from service.bootstrap import Container
from service.usecases import pipeline
from service.usecases.promotion import Promotions, promote
from training import evaluation, need_model
from training.fitting import Trainer

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
EXPERIMENT = "nextbest-retrain"


@dataclass(frozen=True)
class Verdict:
    need: str
    challenger_version: str
    champion_version: str | None
    challenger_roc_auc: float
    champion_roc_auc: float | None
    min_gain: float
    challenger_fairness: dict[str, float]
    champion_fairness: dict[str, float] | None
    fairness_ok: bool
    promoted: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _fairness_ok(
    challenger: dict[str, float], champion: dict[str, float] | None, tolerance: float
) -> tuple[bool, str]:
    if champion is None:
        return True, "no champion to compare with"
    worse = [
        f"{attribute} {challenger[attribute]:.3f} < {champion[attribute]:.3f} - {tolerance}"
        for attribute in challenger
        if attribute in champion
        and not np.isnan(challenger[attribute])
        and not np.isnan(champion[attribute])
        and challenger[attribute] < champion[attribute] - tolerance
    ]
    return (not worse, "; ".join(worse) or "no new disparity")


def judge(
    need: str,
    challenger_version: str,
    challenger_auc: float,
    challenger_fairness: dict[str, float],
    champion_version: str | None,
    champion_auc: float | None,
    champion_fairness: dict[str, float] | None,
    min_gain: float,
    fairness_tolerance: float,
    shortfall: str | None = None,
) -> Verdict:
    """The promotion rule, on figures measured on one holdout; ``shortfall``: why the
    challenger is below the quality floor (None: it is not)."""
    fair, why_fair = _fairness_ok(challenger_fairness, champion_fairness, fairness_tolerance)
    if shortfall is not None:
        promoted, reason = False, shortfall
    elif champion_version is None or champion_auc is None:
        promoted = fair
        reason = "first model for this need" if fair else f"fairness check failed: {why_fair}"
    elif challenger_auc < champion_auc + min_gain:
        promoted = False
        reason = (
            f"not better by the margin: ROC AUC {challenger_auc:.4f} vs champion "
            f"{champion_auc:.4f} (+{min_gain} needed)"
        )
    elif not fair:
        promoted = False
        reason = f"fairness check failed: {why_fair}"
    else:
        promoted = True
        reason = (
            f"better by {challenger_auc - champion_auc:.4f} ROC AUC on the same holdout; {why_fair}"
        )
    return Verdict(
        need,
        challenger_version,
        champion_version,
        challenger_auc,
        champion_auc,
        min_gain,
        challenger_fairness,
        champion_fairness,
        fair,
        promoted,
        reason,
    )


def retrain(
    container: Container,
    bank_dir: Path,
    needs: tuple[str, ...] = NEEDS,
    *,
    min_gain: float = 0.002,
    fairness_tolerance: float = 0.05,
    horizon_days: int = 30,
    step_days: int = 7,
    warm_up_days: int = pipeline.WARM_UP_DAYS,
) -> list[Verdict]:
    settings = container.settings
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    data = pipeline.bank_training_set(container, bank_dir, horizon_days, step_days, warm_up_days)
    trainer = Trainer(data)
    groups = pipeline.fairness_groups(bank_dir)
    verdicts = []
    for need in needs:
        threshold = container.catalog.delivery_threshold(need)
        try:
            fitted = trainer.fit(need, groups=groups, threshold=threshold)
        except ValueError as error:
            log.warning("no challenger for %s: %s", need, error)
            continue
        shortfall = settings.quality_floor.shortfall(
            fitted.evaluation.roc_auc, fitted.evaluation.top_decile_lift
        )
        challenger = need_model.register(
            fitted,
            data,
            settings.tracking_uri,
            settings.artifact_root,
            CHALLENGER,
            {"role": CHALLENGER},
            need_model.quality_tags(shortfall),
        )
        name = need_model.registered_name(need)
        champion_version = _proven(container, client, need, _alias_version(client, name, CHAMPION))
        champion_auc = champion_fairness = None
        test = trainer.windows.test
        y = test[f"label_{need}"].to_numpy()
        if champion_version is not None:
            champion = load_version(client, need, champion_version)
            missing = [f for f in champion.features if f not in test.columns]
            if missing:
                raise ValueError(f"{name} v{champion_version} needs features {missing[:5]}...")
            p = champion.predict(test[list(champion.features)].to_numpy(dtype=np.float64))
            joined = test[["customer_id"]].merge(groups, on="customer_id", how="left")
            result = evaluation.evaluate(
                y,
                p,
                groups={c: joined[c] for c in groups.columns if c != "customer_id"},
                threshold=threshold,
            )
            champion_auc = result.roc_auc
            champion_fairness = result.fairness.ratio if result.fairness else {}
        challenger_fairness = fitted.evaluation.fairness.ratio if fitted.evaluation.fairness else {}
        verdict = judge(
            need,
            challenger.version,
            fitted.evaluation.roc_auc,
            challenger_fairness,
            champion_version,
            champion_auc,
            champion_fairness,
            min_gain,
            fairness_tolerance,
            shortfall,
        )
        if verdict.promoted:
            if champion_version is not None:
                client.set_registered_model_alias(name, PREVIOUS, champion_version)
            promote(container.audit, client, name, challenger.version, CHAMPION, verdict.reason)
        _record(client, name, verdict, settings.artifact_root)
        verdicts.append(verdict)
    return verdicts


def _proven(
    container: Container, client: MlflowClient, need: str, version: str | None
) -> str | None:
    """``version`` if its files are those promoted (as a serving process checks before it
    parses them); otherwise None: there is no champion to compare with, and it is logged."""
    if version is None:
        return None
    files = download_version(client, need, version)
    why = Promotions(lambda: container.audit).check(files.name, version, CHAMPION, files.digest)
    if why is not None:
        log.error("not comparing with the champion: %s", why)
        return None
    return version


def rollback(container: Container, need: str, to_version: str | None = None) -> dict[str, Any]:
    """Point ``champion`` back at ``previous-champion`` (or ``to_version``); recorded."""
    settings = container.settings
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    name = need_model.registered_name(need)
    current = _alias_version(client, name, CHAMPION)
    target = to_version or _alias_version(client, name, PREVIOUS)
    if target is None:
        raise ValueError(f"{name} has no previous champion to roll back to")
    client.get_model_version(name, target)  # fails clearly when the version does not exist
    promote(container.audit, client, name, target, CHAMPION, f"rollback from version {current}")
    if current is not None and current != target:
        client.set_registered_model_alias(name, PREVIOUS, current)
    event = {"need": need, "model": name, "from_version": current, "to_version": target}
    experiment = need_model.ensure_experiment(client, EXPERIMENT, settings.artifact_root)
    with mlflow.start_run(experiment_id=experiment, run_name=f"rollback-{need}"):
        mlflow.log_params({k: str(v) for k, v in event.items()} | {"action": "rollback"})
    return event


def _record(client: MlflowClient, name: str, verdict: Verdict, artifact_root: Path) -> None:
    experiment = need_model.ensure_experiment(client, EXPERIMENT, artifact_root)
    with mlflow.start_run(experiment_id=experiment, run_name=f"retrain-{verdict.need}"):
        mlflow.log_params(
            {
                "action": "retrain",
                "need": verdict.need,
                "challenger_version": verdict.challenger_version,
                "champion_version": str(verdict.champion_version),
                "min_gain": verdict.min_gain,
                "promoted": verdict.promoted,
            }
        )
        figures = {"challenger_roc_auc": verdict.challenger_roc_auc}
        if verdict.champion_roc_auc is not None:
            figures["champion_roc_auc"] = verdict.champion_roc_auc
        mlflow.log_metrics({k: v for k, v in figures.items() if v == v})
        mlflow.log_dict(verdict.as_dict(), "verdict.json")
        mlflow.set_tag("reason", verdict.reason[:5000])
    for key, value in (
        ("promotion", "promoted" if verdict.promoted else "rejected"),
        ("promotion_reason", verdict.reason[:5000]),
        ("promotion_compared_with", str(verdict.champion_version)),
    ):
        client.set_model_version_tag(name, verdict.challenger_version, key, value)
    log.info("%s: %s", name, json.dumps(verdict.as_dict()))
