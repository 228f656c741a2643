"""The steps the CLI, the demo and the end-to-end tests share: load a bank, stream it, train."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from consent.rules.model import ConsentGiven
from consent.rules.vocabulary import NEEDS
from consent.stores.customers import from_extract
from consent.stores.erasure import Erased
from consent.stores.registry import LOAD_RECORDER
from consent.stores.tables import consent_history
from feature_repo.activity import MAX_DAYS
from feature_repo.definitions import ACTIVITY_VIEW
from feature_repo.profile import profile_rows
from service.adapters.transport import EVENTS_TOPIC
from service.bootstrap import Container
from service.usecases import stream_seed
from service.usecases.promotion import promote
from service.usecases.stream_seed import Seeded
from service.usecases.stream_stats import WorkerStats
from training import evaluation, need_model, trainset
from training.backfill import window_states, write_history
from training.bank.in_memory import Bank
from training.bank.spec import BankSpec
from training.fitting import Trainer

log = logging.getLogger(__name__)

#: Snapshots start this long after the first event, so every window (up to 90 days) is full:
#: with cold windows, features drift with the snapshot date and a model trained on early
#: snapshots ranks later ones worse.
WARM_UP_DAYS = MAX_DAYS


def without_erased(container: Container, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the rows of customers in the erasure register: an extract, an archive
    or a training set may still hold them, and must not bring them back."""
    erased = container.erasures.current()
    if not erased or frame.empty:
        return frame
    gone = erased.among(frame["customer_id"].unique())
    return frame[~frame["customer_id"].isin(gone)] if gone else frame


Keyed = TypeVar("Keyed", tuple[str | None, bytes], tuple[int, str | None, bytes])


def without_erased_records(container: Container, records: Iterable[Keyed]) -> Iterator[Keyed]:
    """Records not keyed by an erased customer (the key, a customer id by the contract, is
    second to last: (key, value) or (time, key, value))."""
    erased = container.erasures.current()
    return (r for r in records if r[-2] is None or r[-2] not in erased)


def record_consents(container: Container, consents: pd.DataFrame) -> int:
    # The extract is the bank's own record: its time is both when the bank recorded a choice
    # and when the customer gave it.
    consents = without_erased(container, consents)
    entries = [
        ConsentGiven.model_validate(
            {
                **row,
                "recorded_at": pd.Timestamp(row["recorded_at"]).to_pydatetime(),
                "recorded_by": LOAD_RECORDER,
            }
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
    """Consents into the registry, the customer extract into the profile features, events
    (malformed ones included) onto the transport."""
    consents = record_consents(container, bank.consents)
    write_profiles(container, bank.customers, bank.spec.start)
    records = without_erased_records(container, ((k, v) for _, k, v in bank.records()))
    return consents, publish(container, records)


def stream_until_idle(
    container: Container, idle_s: float = 2.0, clock: Callable[[], int] | None = None
) -> WorkerStats:
    worker = container.worker(clock=clock)
    try:
        return worker.run(idle_exit_s=idle_s)
    finally:
        worker.close()


def keep_scores(container: Container, customers: Sequence[str]) -> int:
    """Keep the served models' scores ready for ``customers`` who agreed to profiling, as the
    stream's alerter does when their features change: for features loaded outside the stream.
    Returns how many were kept."""
    from datetime import UTC

    from service.usecases.score_keeping import ScoreKeeper

    keeper = ScoreKeeper(
        container.models,
        container.features.read,
        container.features.online,
        container.registry,
        container.catalog,
        lambda: datetime.now(UTC),
    )
    keeper.keep(list(customers))
    return keeper.kept


def write_profiles(container: Container, customers: pd.DataFrame, as_of: datetime) -> int:
    """A customer-table extract as profile features (online and offline) and as the facts the
    gate reads (the customer directory)."""
    customers = without_erased(container, customers)
    rows = profile_rows(customers, as_of)
    container.features.write_profiles(rows)
    container.directory.upsert(from_extract(customers))
    return len(rows)


def backfill(container: Container, bank_dir: Path, step_days: int = 1) -> int:
    """The offline feature history of a written bank, a snapshot every ``step_days``, for
    training on history that never went through the stream."""
    spec = BankSpec.from_dict(json.loads((bank_dir / "bank.json").read_text())["spec"])
    customers = without_erased(
        container, pd.read_parquet(bank_dir / "customers.parquet", columns=["customer_id"])
    )
    # Whole multiples of the step from the start, the grid training snapshots fall on: a row
    # stamped a day off the grid is not visible at the snapshot, and the join would take the
    # row a whole step older: every feature stale by days, and the models the worse for it.
    times = trainset.snapshot_times(spec.start + timedelta(days=step_days), spec.end, step_days)
    folder = container.store_location.offline_dir / ACTIVITY_VIEW
    return write_history(
        _archived_events(container, bank_dir), times, folder, customers["customer_id"].tolist()
    )


def seed_stream(container: Container, bank_dir: Path) -> Seeded:
    """The stream's state, timers and online rows as of the end of a written bank's archive, as
    if it had gone through the stream (run ``backfill`` for its offline history); the stream
    worker carries on from there. Erased customers are left out."""
    spec = BankSpec.from_dict(json.loads((bank_dir / "bank.json").read_text())["spec"])
    states = window_states(
        _archived_events(container, bank_dir), spec.end, container.settings.allowed_lateness_us
    )
    producer = container.producer()
    topic = container.settings.topic(EVENTS_TOPIC)
    try:
        return stream_seed.seed_stream(
            states,
            container.state_store(),
            container.timer_index(),
            container.features.online,
            lambda customer: producer.partition_of(topic, customer),
        )
    finally:
        producer.close()


def _archived_events(container: Container, bank_dir: Path) -> Iterator[pa.Table]:
    """A written bank's events, one file at a time (memory follows the feature buckets, not the
    archive), erased customers left out."""
    erased = container.erasures.current()
    for path in sorted((bank_dir / "events").glob("*.parquet")):
        yield _without_erased_events(pq.read_table(path), erased)


def _without_erased_events(events: pa.Table, erased: Erased) -> pa.Table:
    gone = erased.among(events["customer_id"].unique().to_pylist()) if erased else set()
    if not gone:
        return events
    return events.filter(pc.invert(pc.is_in(events["customer_id"], pa.array(sorted(gone)))))


@dataclass(frozen=True)
class TrainReport:
    models: list[need_model.TrainedModel]
    evaluations: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    rows: int
    excluded_without_profiling: int
    horizon_days: int
    fingerprint: str
    seconds: dict[str, float]
    #: Needs whose model was registered but not promoted, with why (below the quality floor).
    below_floor: dict[str, str] = field(default_factory=dict)
    #: Rows left out because the customer's profiling consent is withdrawn now.
    excluded_withdrawn_now: int = 0


def bank_training_set(
    container: Container,
    bank_dir: Path,
    horizon_days: int,
    step_days: int,
    warm_up_days: int = WARM_UP_DAYS,
) -> trainset.TrainingSet:
    """Snapshots of every customer from ``warm_up_days`` in until the label horizon still fits,
    on the generator's truth grid (every 7 days from the start) when the step matches it."""
    customers = pd.read_parquet(bank_dir / "customers.parquet", columns=["customer_id"])
    outcomes = pd.read_parquet(bank_dir / "outcomes.parquet")
    spec = BankSpec.from_dict(json.loads((bank_dir / "bank.json").read_text())["spec"])
    # Whole multiples of the step from the start: with a 7-day step, the generator's truth grid.
    first = spec.start + timedelta(days=-(-warm_up_days // step_days) * step_days)
    last = spec.end - timedelta(days=horizon_days)
    times = trainset.snapshot_times(first, last, step_days)
    if len(times) < 4:
        raise ValueError(
            f"the bank's {spec.days} days give {len(times)} snapshots every {step_days} days "
            f"after a {warm_up_days}-day warm-up with a {horizon_days}-day horizon; a time "
            f"split needs at least 4 (generate more days)"
        )
    customers = without_erased(container, customers)
    entity = trainset.snapshots(list(customers["customer_id"]), times)
    consents = pd.read_sql_table(consent_history.name, container.engine)
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"], utc=True)
    return trainset.build(container.feature_store, entity, consents, outcomes, horizon_days)


def fairness_groups(bank_dir: Path) -> pd.DataFrame:
    """customer_id, gender, age band: what the fairness report compares across."""
    people = pd.read_parquet(
        bank_dir / "customers.parquet", columns=["customer_id", "gender", "age"]
    )
    return pd.DataFrame(
        {
            "customer_id": people["customer_id"],
            "gender": people["gender"].astype(str),
            "age_band": evaluation.age_band(people["age"]),
        }
    )


def train_from_bank(
    container: Container,
    bank_dir: Path,
    needs: Sequence[str] = NEEDS,
    horizon_days: int = trainset.DEFAULT_HORIZON_DAYS,
    step_days: int = 7,
    alias: str | None = None,
    dask_client: Any = None,
    tags: dict[str, str] | None = None,
    warm_up_days: int = WARM_UP_DAYS,
) -> TrainReport:
    """Train, calibrate, evaluate and register a model per need; ``alias`` defaults to the
    served one (``NEXTBEST_MODEL_ALIAS``)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    data = bank_training_set(container, bank_dir, horizon_days, step_days, warm_up_days)
    seconds["training_set"] = time.perf_counter() - started
    truth = pd.read_parquet(bank_dir / "truth.parquet")
    truth = truth[truth["horizon_days"] == horizon_days].rename(
        columns={"snapshot_at": "event_timestamp"}
    )
    people = pd.read_parquet(
        bank_dir / "customers.parquet", columns=["customer_id", "gender", "age"]
    )
    groups = pd.DataFrame(
        {
            "customer_id": people["customer_id"],
            "gender": people["gender"].astype(str),
            "age_band": evaluation.age_band(people["age"]),
        }
    )
    trainer = Trainer(data, dask_client=dask_client)
    settings = container.settings
    floor = settings.quality_floor
    models, evaluations, skipped, below_floor = [], {}, {}, {}
    for need in needs:
        began = time.perf_counter()
        try:
            fitted = trainer.fit(
                need,
                truth=truth[truth["need"] == need][
                    ["customer_id", "event_timestamp", "propensity"]
                ],
                groups=groups,
                threshold=container.catalog.delivery_threshold(need),
            )
        except ValueError as error:  # too few examples of the need in this bank
            log.warning("not training %s: %s", need, error)
            skipped[need] = str(error)
            continue
        seconds[f"fit_{need}"] = time.perf_counter() - began
        shortfall = floor.shortfall(fitted.evaluation.roc_auc, fitted.evaluation.top_decile_lift)
        if shortfall is not None:
            log.warning("registering %s without promoting it: %s", need, shortfall)
            below_floor[need] = shortfall
        began = time.perf_counter()
        trained = need_model.register(
            fitted,
            data,
            settings.tracking_uri,
            settings.artifact_root,
            None,
            tags,
            need_model.quality_tags(shortfall),
        )
        models.append(trained)
        if shortfall is None:  # recorded in the audit log with the artifact's digest
            promote(
                container.audit,
                MlflowClient(settings.tracking_uri),
                trained.name,
                trained.version,
                alias or settings.model_alias,
                "trained: met the quality floor",
            )
        seconds[f"register_{need}"] = time.perf_counter() - began
        evaluations[need] = fitted.evaluation.as_dict()
    return TrainReport(
        models,
        evaluations,
        skipped,
        len(data.frame),
        data.excluded_without_profiling,
        horizon_days,
        data.fingerprint,
        seconds,
        below_floor,
        data.excluded_withdrawn_now,
    )


def report_dict(report: TrainReport) -> dict[str, Any]:
    """What ``nextbest train`` prints: per need the registered version and its test figures."""
    keys = (
        *("roc_auc", "oracle_roc_auc", "oracle_ratio", "pr_auc", "top_decile_capture"),
        *("top_decile_lift", "brier", "calibration_error", "positives", "rows"),
    )
    return {
        "rows": report.rows,
        "excluded_without_profiling": report.excluded_without_profiling,
        "excluded_profiling_withdrawn_now": report.excluded_withdrawn_now,
        "horizon_days": report.horizon_days,
        "training_set_fingerprint": report.fingerprint,
        "models": {
            m.need: {
                "name": m.name,
                "version": m.version,
                "run_id": m.run_id,
                **{k: report.evaluations[m.need][k] for k in keys},
                "fairness_ratio": (report.evaluations[m.need]["fairness"] or {}).get("ratio"),
                "promoted": m.need not in report.below_floor,
            }
            for m in report.models
        },
        # Registered, not promoted: the need's actions are withheld (NO_MODEL) unless an
        # earlier champion that met the floor keeps serving.
        "below_floor": report.below_floor,
        "skipped": report.skipped,
        "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
    }
