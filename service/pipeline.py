"""The steps the CLI, the demo and the end-to-end tests share: load a bank, stream it, train."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd

from consent.model import ConsentGiven
from consent.store import consent_history
from service.bootstrap import Container
from service.transport import EVENTS_TOPIC
from service.worker import WorkerStats
from training import need_model, trainset
from training.synthetic import Bank

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


def publish_events(container: Container, events: list[dict], chunk: int = 10_000) -> int:
    producer = container.producer()
    topic = container.settings.topic(EVENTS_TOPIC)
    try:
        for start in range(0, len(events), chunk):
            for event in events[start : start + chunk]:
                producer.send(topic, event.get("customer_id"), json.dumps(event).encode())
            producer.flush()
    finally:
        producer.close()
    return len(events)


def load_bank(container: Container, bank: Bank) -> tuple[int, int]:
    """Consents into the registry, events onto the configured transport."""
    consents = record_consents(container, bank.consents)
    events = publish_events(container, bank.event_dicts())
    return consents, events


def stream_until_idle(container: Container, idle_s: float = 2.0) -> WorkerStats:
    worker = container.worker()
    try:
        return worker.run(idle_exit_s=idle_s)
    finally:
        worker.close()


def outcomes_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Applications and product openings, flattened: customer_id, type, product, occurred_at."""
    hits = events[events["type"].isin(["application", "product_opened"])].copy()
    hits["product"] = [json.loads(p).get("product") for p in hits["payload"]]
    hits["occurred_at"] = pd.to_datetime(hits["occurred_at"], utc=True)
    return hits[["customer_id", "type", "product", "occurred_at"]]


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
    events = pd.read_parquet(bank_dir / "events.parquet")
    first = pd.Timestamp(events["occurred_at"].min()).ceil("D") + timedelta(days=WARM_UP_DAYS)
    last = pd.Timestamp(events["occurred_at"].max()).floor("D") - timedelta(days=horizon_days)
    if last <= first:
        raise ValueError("the bank's history is too short for this label horizon")
    entity = trainset.snapshots(list(customers["customer_id"]), first, last, step_days)
    consents = pd.read_sql_table(consent_history.name, container.engine)
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"], utc=True)
    data = trainset.build(
        container.feature_store, entity, consents, outcomes_from_events(events), need, horizon_days
    )
    model = need_model.train_and_register(
        data,
        container.settings.tracking_uri,
        container.settings.artifact_root,
        container.settings.model_alias,
    )
    return TrainReport(
        model, len(data.frame), int(data.frame["label"].sum()), data.excluded_without_profiling
    )
