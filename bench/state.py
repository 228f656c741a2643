"""The state a decision benchmark runs on, built with the project's own pipeline.

A synthetic bank → consents, customer directory and profiles → offline history by backfill →
the latest feature rows online → the need models trained and registered in MLflow, in a folder
(``--home``) with its own Feast project and, on PostgreSQL, its own schema. A state is kept for
another run (``--keep``, ``--reuse``) or dropped at the end, its schema and online rows with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sqlalchemy import create_engine, make_url, text

from bench.load import CHANNEL
from consent.rules.vocabulary import NEEDS
from feature_repo.activity import ACTIVITY_FIELDS
from service.adapters.stream_stores import drop_redis_project
from service.bootstrap import Container
from service.settings import load_settings
from service.usecases import pipeline
from training.backfill import history
from training.bank.spec import BankSpec
from training.bank.store import write_bank
from training.trainset import END_OF_DAY

MANIFEST = "bench-decide.json"
DECIDERS = "decision-customers.json"


@dataclass(frozen=True)
class State:
    """Where a benchmark state lives; written to ``<home>/bench-decide.json`` once complete."""

    home: Path
    project: str
    schema: str | None  # None: the embedded SQLite operational store
    online_store: str  # "redis" or "sqlite"
    customers: int = 0
    days: int = 0

    @property
    def manifest(self) -> Path:
        return self.home / MANIFEST

    def save(self) -> None:
        document = {k: v for k, v in asdict(self).items() if k != "home"}
        self.manifest.write_text(json.dumps(document, indent=2))

    @classmethod
    def load(cls, home: Path) -> State:
        path = home / MANIFEST
        if not path.exists():
            raise SystemExit(f"{home} holds no complete benchmark state (built with --keep?)")
        return cls(home=home, **json.loads(path.read_text()))


@dataclass(frozen=True)
class Backends:
    redis_url: str | None
    database_url: str  # "sqlite" or a PostgreSQL URL with rights to create schemas

    @property
    def postgres(self) -> bool:
        return not self.database_url.startswith("sqlite")


def scoped_url(url: str, schema: str) -> str:
    """``url`` with every connection's search path set to ``schema``."""
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


def environment(state: State, backends: Backends, log_level: str = "WARNING") -> dict[str, str]:
    """The ``NEXTBEST_*`` settings of the state, for this process and the API's."""
    env = {
        "NEXTBEST_HOME": str(state.home),
        "NEXTBEST_FEAST_PROJECT": state.project,
        "NEXTBEST_ONLINE_STORE": state.online_store,
        "NEXTBEST_LOG_LEVEL": log_level,
    }
    if state.online_store == "redis" and backends.redis_url:
        env["NEXTBEST_REDIS_URL"] = backends.redis_url
    if state.schema is not None:
        env["NEXTBEST_DATABASE_URL"] = scoped_url(backends.database_url, state.schema)
    return env


def _admin(url: str, statement: str) -> None:
    """One statement on its own short-lived engine (creating or dropping the run's schema)."""
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def new_state(home: Path, backends: Backends, customers: int, days: int) -> State:
    """A state with its own Feast project and, on PostgreSQL, its own empty schema."""
    tag = uuid.uuid4().hex[:10]
    schema = None
    if backends.postgres:
        schema = f"bench_decide_{tag}"
        _admin(backends.database_url, f"create schema {schema}")
    online = "redis" if backends.redis_url else "sqlite"
    return State(home, f"bench_decide_{tag}", schema, online, customers, days)


def drop_state(state: State, backends: Backends) -> dict[str, Any]:
    """Drop the schema and the Feast project's online rows (everything else is in the home)."""
    dropped: dict[str, Any] = {}
    if state.schema is not None:
        _admin(backends.database_url, f"drop schema if exists {state.schema} cascade")
        dropped["schema"] = state.schema
    if state.online_store == "redis" and backends.redis_url:
        dropped["online_keys"] = drop_redis_project(backends.redis_url, state.project)
    return dropped


def replace_state(home: Path, backends: Backends) -> dict[str, Any] | None:
    """Drop the state kept in ``home``, if any, before a new one is built there: its schema and
    online rows live outside the folder, and nothing would refer to them again (they would pile
    up on the servers, build after build)."""
    if not (home / MANIFEST).exists():
        return None
    old = State.load(home)
    if (old.schema is not None and not backends.postgres) or (
        old.online_store == "redis" and not backends.redis_url
    ):
        raise SystemExit(
            f"{home} holds a state built on other backends: build again with its "
            "--redis-url/--database-url (it is dropped first), or use another --home"
        )
    dropped = drop_state(old, backends)
    old.manifest.unlink()
    return dropped


def consenting(consents: pd.DataFrame) -> set[str]:
    """Customers whose latest choices grant profiling and marketing on the channel (the
    registry's rule: the entry recorded last wins)."""
    latest = consents.sort_values("recorded_at", kind="stable")
    latest = latest.groupby(["customer_id", "purpose", "channel"]).tail(1)
    granted = latest[latest["granted"]]

    def who(purpose: str, channel: str) -> set[str]:
        chosen = granted[(granted["purpose"] == purpose) & (granted["channel"] == channel)]
        return set(chosen["customer_id"])

    return who("profiling", "any") & who("marketing", CHANNEL)


def write_latest_online(container: Container, bank_dir: Path, end: datetime) -> list[str]:
    """The feature rows online as the stream's timers leave them on ``end``'s day (a midnight,
    the bank's end): exact for that day, stamped with its midnight, saying until when they
    hold; returns the customers who have a row (the others decide without features)."""
    customers = pd.read_parquet(bank_dir / "customers.parquet", columns=["customer_id"])
    days = (pq.read_table(path) for path in sorted((bank_dir / "events").glob("*.parquet")))
    # The features of ``end``'s day: those at its end, with no event after the bank's end.
    day_end = pd.Timestamp(end) + pd.Timedelta(days=1) - END_OF_DAY
    (_, latest), *_ = reversed(list(history(days, [day_end], customers["customer_id"].tolist())))
    frame = latest.to_pandas()
    midnight = int(pd.Timestamp(end).value // 1_000)
    container.features.online.write(
        frame["customer_id"].tolist(),
        np.full(len(frame), midnight, np.int64),
        frame[list(ACTIVITY_FIELDS)].to_numpy(dtype=np.float64),
    )
    return list(frame["customer_id"])


def build_state(state: State, backends: Backends, seed: int) -> dict[str, Any]:
    """The project's pipeline end to end; returns seconds per step and what was trained."""
    seconds: dict[str, float] = {}
    bank_dir = state.home / "bank"
    # The bank ends at today's midnight: the rows served are today's, as the stream's timers
    # leave them.
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    began = time.perf_counter()
    spec = BankSpec(seed=seed, customers=state.customers, days=state.days, end=end)
    write_bank(spec, bank_dir, workers=2)
    seconds["generate"] = time.perf_counter() - began

    container = Container(load_settings(environment(state, backends)))
    try:
        began = time.perf_counter()
        consents = pd.read_parquet(bank_dir / "consents.parquet")
        pipeline.record_consents(container, consents)
        customers = pd.read_parquet(bank_dir / "customers.parquet")
        pipeline.write_profiles(container, customers, spec.start)
        seconds["consents_and_profiles"] = time.perf_counter() - began

        began = time.perf_counter()
        pipeline.backfill(container, bank_dir, step_days=7)
        online = write_latest_online(container, bank_dir, end)
        seconds["backfill_and_online"] = time.perf_counter() - began

        began = time.perf_counter()
        # The 14-day warm-up of the demo: a bank of a few months cannot fill the 90-day windows
        # before the snapshots a time split needs.
        report = pipeline.train_from_bank(container, bank_dir, NEEDS, step_days=7, warm_up_days=14)
        seconds["train_and_register"] = time.perf_counter() - began

        # The customers the load is drawn from: profiled and contactable on the app, with
        # features; their scores kept ready, as the stream's alerter leaves them.
        deciders = sorted(consenting(consents) & set(online))
        began = time.perf_counter()
        pipeline.keep_scores(container, deciders)
        seconds["keep_scores"] = time.perf_counter() - began
    finally:
        container.engine.dispose()
    (state.home / DECIDERS).write_text(json.dumps(deciders))
    return {
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "models": sorted(m.need for m in report.models),
        "skipped": report.skipped,
        "training_rows": report.rows,
    }


@contextmanager
def state_for(
    args: argparse.Namespace, backends: Backends
) -> Iterator[tuple[State, dict[str, Any]]]:
    """The state to run on (built unless ``--reuse``); dropped at the end unless kept."""
    scratch = None if args.home else tempfile.mkdtemp(prefix="nextbest-bench-decide-")
    home = (args.home or Path(str(scratch))).absolute()
    home.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"home": str(home), "kept": False}
    if args.reuse:
        state = State.load(home)
        if (state.schema is not None, state.online_store) != (
            backends.postgres,
            "redis" if backends.redis_url else "sqlite",
        ):
            raise SystemExit(f"{home} was built on other backends than --redis-url/--database-url")
    else:
        if (replaced := replace_state(home, backends)) is not None:
            report["replaced"] = replaced
        state = new_state(home, backends, args.customers, args.days)
    complete = args.reuse
    try:
        if args.reuse:
            report["reused"] = True
        else:
            report["built"] = build_state(state, backends, args.seed)
            state.save()
            complete = True
        yield state, report
    finally:
        if args.keep and complete:
            report["kept"] = True
        else:
            report["dropped"] = drop_state(state, backends)
            state.manifest.unlink(missing_ok=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
