"""Benchmark: training all seven need models on a point-in-time training set.

Builds a state folder (synthetic bank → consents and customer extract → offline feature history
by backfill), then measures, in the same run:

- the point-in-time join of the training set through Feast (DuckDB offline store);
- ``Trainer``: the features binned once and shared by the seven needs, each need fitted with
  early stopping, calibrated and evaluated (what ``nextbest train`` does before MLflow);
- the naive way of the same work: per need, its own point-in-time join and its own binning,
  then the same fit, calibration and evaluation (``speedup_vs_naive`` compares join + fits);
- registering the seven models in MLflow (runs, plots, pyfunc models), separately.

    python -m bench.train --customers 100000 --days 200         # about 1,000,000 rows
    python -m bench.train --home /tmp/state --reuse              # a state built before
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from bench.common import PeakMemory, emit
from consent.rules.vocabulary import NEEDS
from service.bootstrap import Container
from service.settings import load_settings
from service.usecases import pipeline
from service.usecases.promotion import promote
from training import need_model, trainset
from training.bank.spec import BankSpec
from training.bank.store import write_bank
from training.fitting import Trainer


def build_state(home: Path, customers: int, days: int, seed: int) -> dict[str, float]:
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    write_bank(BankSpec(seed=seed, customers=customers, days=days), home / "bank", workers=2)
    seconds["generate"] = time.perf_counter() - began
    container = Container(load_settings({"NEXTBEST_HOME": str(home)}))
    began = time.perf_counter()
    pipeline.record_consents(container, pd.read_parquet(home / "bank" / "consents.parquet"))
    spec = BankSpec.from_dict(json.loads((home / "bank" / "bank.json").read_text())["spec"])
    pipeline.write_profiles(
        container, pd.read_parquet(home / "bank" / "customers.parquet"), spec.start
    )
    seconds["load_consents_and_profiles"] = time.perf_counter() - began
    began = time.perf_counter()
    pipeline.backfill(container, home / "bank", step_days=7)
    seconds["backfill"] = time.perf_counter() - began
    container.engine.dispose()
    return seconds


def naive_need(
    container: Container,
    home: Path,
    entity: pd.DataFrame,
    need: str,
    truth: pd.DataFrame,
    groups: pd.DataFrame,
) -> float:
    """One need the straightforward way: its own point-in-time join (as if the set depended
    on the need), its own binning, then the same fit, calibration and evaluation."""
    consents = pd.read_sql_table("consent_history", container.engine)
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"], utc=True)
    outcomes = pd.read_parquet(home / "bank" / "outcomes.parquet")
    data = trainset.build(container.feature_store, entity, consents, outcomes, 30, (need,))
    trainer = Trainer(data)
    fitted = trainer.fit(need, truth, groups, container.catalog.delivery_threshold(need))
    return fitted.evaluation.roc_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", type=Path, default=None, help="State folder (default: temp).")
    parser.add_argument("--reuse", action="store_true", help="The state in --home exists.")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="nextbest-bench-train-")
    home = args.home or Path(scratch.name)
    result: dict[str, Any] = {"benchmark": "train", "needs": list(NEEDS)}
    with PeakMemory() as memory:
        if not args.reuse:
            result["setup_seconds"] = build_state(home, args.customers, args.days, args.seed)
        container = Container(load_settings({"NEXTBEST_HOME": str(home)}))
        began = time.perf_counter()
        data = pipeline.bank_training_set(container, home / "bank", 30, 7)
        result["training_set_seconds"] = round(time.perf_counter() - began, 2)
        result["rows"] = len(data.frame)
        result["snapshot_times"] = int(data.frame["event_timestamp"].nunique())
        result["excluded_without_profiling"] = data.excluded_without_profiling
        result["features"] = len(data.features)

        began = time.perf_counter()
        trainer = Trainer(data)
        truth = pd.read_parquet(home / "bank" / "truth.parquet")
        truth = truth.rename(columns={"snapshot_at": "event_timestamp"})
        groups = pipeline.fairness_groups(home / "bank")
        fitted, per_need, skipped = {}, {}, {}
        for need in NEEDS:
            t = time.perf_counter()
            mine = truth[truth["need"] == need][["customer_id", "event_timestamp", "propensity"]]
            try:
                fitted[need] = trainer.fit(
                    need, mine, groups, container.catalog.delivery_threshold(need)
                )
            except ValueError as error:  # a small bank may lack examples of a need
                skipped[need] = str(error)
            per_need[need] = round(time.perf_counter() - t, 2)
        result["skipped"] = skipped
        result["train_seconds"] = round(time.perf_counter() - began, 2)
        result["train_seconds_by_need"] = per_need
        result["windows"] = trainer.windows.sizes()
        result["test"] = {
            need: {
                "roc_auc": round(f.evaluation.roc_auc, 4),
                "oracle_roc_auc": f.evaluation.oracle_roc_auc
                and round(f.evaluation.oracle_roc_auc, 4),
                "oracle_ratio": f.evaluation.oracle_ratio and round(f.evaluation.oracle_ratio, 4),
                "iterations": f.booster.current_iteration(),
            }
            for need, f in fitted.items()
        }
        if not args.skip_naive:
            entity = trainset.snapshots(
                pd.read_parquet(home / "bank" / "customers.parquet")["customer_id"].tolist(),
                sorted(data.frame["event_timestamp"].unique()),
            )
            began = time.perf_counter()
            naive_auc = {}
            for need in fitted:
                mine = truth[truth["need"] == need]
                mine = mine[["customer_id", "event_timestamp", "propensity"]]
                naive_auc[need] = naive_need(container, home, entity, need, mine, groups)
            result["naive_seconds"] = round(time.perf_counter() - began, 2)
            result["naive_roc_auc"] = {k: round(v, 4) for k, v in naive_auc.items()}
            optimised = result["training_set_seconds"] + result["train_seconds"]
            result["speedup_vs_naive"] = round(result["naive_seconds"] / optimised, 2)
        began = time.perf_counter()
        settings = container.settings
        client = MlflowClient(settings.tracking_uri)
        for f in fitted.values():
            model = need_model.register(
                f, data, settings.tracking_uri, settings.artifact_root, None
            )
            # Promoted as NextBest promotes, so that bench.score may serve it.
            promote(container.audit, client, model.name, model.version, "bench", "benchmark")
        result["register_seconds"] = round(time.perf_counter() - began, 2)
        result["total_seconds_join_train_register"] = round(
            result["training_set_seconds"] + result["train_seconds"] + result["register_seconds"],
            2,
        )
    result["peak_memory_mb"] = memory.peak_mb
    emit(result)
    scratch.cleanup()


if __name__ == "__main__":
    main()
