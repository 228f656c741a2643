"""Batch scoring for outbound campaigns: every customer with profiling consent, every need.

Features come from the offline store through a Feast point-in-time join at the scoring time
(the same values the online store served then), models from the registry alias. The output is a
scored list, not a delivery list: consent for the channel, suitability and contact rules are
checked by the gate when an action is delivered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from consent.store import consent_history
from service.bootstrap import Container
from service.models import NeedModel
from training.trainset import historical_features


def score_matrix(models: Mapping[str, NeedModel], frame: pd.DataFrame) -> pd.DataFrame:
    """``score_<need>`` per row of ``frame`` (which holds every model's features)."""
    out = {}
    for need, model in sorted(models.items()):
        matrix = frame[list(model.features)].to_numpy(dtype=np.float64)
        out[f"score_{need}"] = model.predict(matrix)
    return pd.DataFrame(out, index=frame.index)


def profiled_customers(container: Container, at: datetime) -> list[str]:
    """Customers whose latest profiling entry at ``at`` is a grant (unknown is a no)."""
    history = pd.read_sql_table(consent_history.name, container.engine)
    history = history[history["purpose"] == "profiling"]
    history["recorded_at"] = pd.to_datetime(history["recorded_at"], utc=True)
    history = history[history["recorded_at"] <= pd.Timestamp(at)]
    latest = history.sort_values(["recorded_at", "id"]).groupby("customer_id").tail(1)
    return sorted(latest.loc[latest["granted"].astype(bool), "customer_id"])


def features_at(container: Container, at: datetime) -> pd.DataFrame:
    """Every profiled customer's scoring features as of ``at`` (point-in-time, through Feast)."""
    customers = profiled_customers(container, at)
    # Their consents went with the erasure; the register also covers history written back since.
    erased = container.erasures.current().among(customers)
    customers = [c for c in customers if c not in erased]
    entity = pd.DataFrame({"customer_id": customers, "event_timestamp": pd.Timestamp(at)})
    frame = historical_features(container.feature_store, entity)
    return frame.sort_values("customer_id", ignore_index=True)


def batch_score(container: Container, out: Path, at: datetime) -> dict[str, object]:
    models = container.models.snapshot()
    if not models:
        raise ValueError("no models to score with: train first (nextbest train)")
    frame = features_at(container, at)
    scores = score_matrix(models, frame)
    result = pd.concat([frame[["customer_id"]], scores], axis=1)
    table = pa.Table.from_pandas(result, preserve_index=False)
    versions = {need: f"{m.name}/{m.version}" for need, m in sorted(models.items())}
    metadata = {
        b"nextbest.models": json.dumps(versions).encode(),
        b"nextbest.as_of": at.isoformat().encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        result.to_csv(out, index=False)
    else:
        pq.write_table(table, out)
    return {"customers": len(result), "as_of": at.isoformat(), "models": versions, "out": str(out)}
