"""The steps the CLI, the demo and the end-to-end tests share: load a bank, stream it, train."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from consent.model import ConsentGiven
from consent.store import consent_history
from service.bootstrap import Container
from service.transport import EVENTS_TOPIC
from service.worker import WorkerStats
from training import need_model, trainset
from training.bank import Bank

log = logging.getLogger(__name__)

#: Snapshots start this long after the first event, so the 30-day windows are warm.
WARM_UP_DAYS = 14


def record_consents(container: Container, consents: pd.DataFrame) -> int:
    entries = [
        ConsentGiven.model_validate(
            {**row, "recorded_at": pd.Timestamp(row["recorded_at"]).to_pydatetime()}
        )
        for row in consents.to_dict("records")
    ]
    return container.registry.record(entries)


def publish(
    container: Container,
    records: Iterable[tuple[str | None, bytes]],
    flush_every: int = 10_000,
) -> int:
    """Send (key, value) records to the events topic; returns how many were sent."""
    producer = container.producer()
    topic = container.settings.topic(EVENTS_TOPIC)
    sent = 0
    try:
        for key, value in records:
            producer.send(topic, key, value)
            sent += 1
            if sent % flush_every == 0:
                producer.flush()
        producer.flush()
    finally:
        producer.close()
    return sent


def publish_events(container: Container, events: Iterable[dict[str, Any]]) -> int:
    return publish(container, ((e.get("customer_id"), json.dumps(e).encode()) for e in events))


def load_bank(container: Container, bank: Bank) -> tuple[int, int]:
    """Consents into the registry, events (malformed ones included) onto the transport."""
    consents = record_consents(container, bank.consents)
    return consents, publish(container, ((k, v) for _, k, v in bank.records()))


def stream_until_idle(container: Container, idle_s: float = 2.0) -> WorkerStats:
    worker = container.worker()
    try:
        return worker.run(idle_exit_s=idle_s)
    finally:
        worker.close()


@dataclass(frozen=True)
class TrainReport:
    model: need_model.TrainedModel
    rows: int
    positives: int
    excluded_without_profiling: int


def train_from_bank(
    container: Container,
    bank_dir: Path,
    need: str = "mortgage",
    horizon_days: int = 21,
    step_days: int = 3,
) -> TrainReport:
    customers = pd.read_parquet(bank_dir / "customers.parquet", columns=["customer_id"])
    outcomes = pd.read_parquet(bank_dir / "outcomes.parquet")
    spec = json.loads((bank_dir / "bank.json").read_text())["spec"]
    end = pd.Timestamp(spec["end"])
    first = end - timedelta(days=spec["days"] - WARM_UP_DAYS)
    last = end - timedelta(days=horizon_days)
    if last <= first:
        raise ValueError("the bank's history is too short for this label horizon")
    entity = trainset.snapshots(list(customers["customer_id"]), first, last, step_days)
    consents = pd.read_sql_table(consent_history.name, container.engine)
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"], utc=True)
    data = trainset.build(container.feature_store, entity, consents, outcomes, need, horizon_days)
    model = need_model.train_and_register(
        data,
        container.settings.tracking_uri,
        container.settings.artifact_root,
        container.settings.model_alias,
    )
    return TrainReport(
        model, len(data.frame), int(data.frame["label"].sum()), data.excluded_without_profiling
    )
