"""Shared fixtures. Real servers come from scripts/services (via TEST_* variables set by
scripts/test); in CI a missing server is a failure, elsewhere its tests are skipped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from feature_repo.activity import FEATURE_NAMES
from service.bootstrap import Container
from service.entrypoints.auth import DEV_KEYS_FILE, Role, plain_key
from service.settings import Settings, load_settings
from service.usecases import pipeline
from training.backfill import history
from training.bank.in_memory import Bank
from training.bank.spec import DEFAULT_END
from training.trainset import END_OF_DAY

IN_CI = os.environ.get("CI", "").lower() == "true"


def _server(variable: str, what: str) -> str:
    value = os.environ.get(variable)
    if not value:
        message = f"{what} is not available ({variable} is not set; run the tests via scripts/test)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return value


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _server("TEST_KAFKA_BOOTSTRAP_SERVERS", "Apache Kafka")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _server("TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _server("TEST_DATABASE_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's headless Chromium (scripts/browser installs it; scripts/test sets the path)."""
    return _server("TEST_CHROMIUM_PATH", "Headless Chromium")


def make_settings(home: Path, **overrides: str) -> Settings:
    # Test banks end on a fixed day (BankSpec's DEFAULT_END, for reproducible data): the
    # horizon of history the stream takes is stretched by the days since, so they stay in
    # bounds however long after it the suite runs. Tests of the horizon set it themselves.
    horizon = (datetime.now(UTC) - DEFAULT_END).days + int(
        Settings.model_fields["max_event_age_days"].default
    )
    environ = {"NEXTBEST_HOME": str(home), "NEXTBEST_MAX_EVENT_AGE_DAYS": str(max(horizon, 1))}
    environ.update({f"NEXTBEST_{k.upper()}": v for k, v in overrides.items()})
    return load_settings(environ)


def backfilled(container: Container, bank: Bank, bank_dir: Path) -> list[str]:
    """A written bank's consents and profiles recorded, its offline feature history backfilled
    weekly and its latest history served online, as the stream would have left it, without
    running the stream. Returns the customers served online."""
    pipeline.record_consents(container, bank.consents)
    pipeline.write_profiles(container, bank.customers, bank.spec.start)
    assert pipeline.backfill(container, bank_dir, step_days=7) > 0
    last_day_end = pd.Timestamp(bank.spec.end).normalize() - END_OF_DAY
    (_, latest), *_ = reversed(list(history(bank.tables["events"], [last_day_end])))
    frame = latest.to_pandas()
    container.features.online.write(
        frame["customer_id"].tolist(),
        frame["event_timestamp"].to_numpy(dtype="datetime64[us]").astype(np.int64),
        frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64),
    )
    return [str(c) for c in frame["customer_id"]]


def key_headers(container: Container, role: Role) -> dict[str, str]:
    """Headers carrying the development key of ``role`` (generated in the container's home)."""
    assert container.keyring  # generates the development key file on first use
    return {"X-API-Key": plain_key(container.settings.home / DEV_KEYS_FILE, role)}


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Container]:
    """A container on the embedded defaults in a fresh state folder."""
    container = Container(make_settings(tmp_path / "home"))
    yield container
    container.close()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@contextmanager
def real_stack_settings(
    home: Path, kafka_bootstrap: str, redis_url: str, postgres_url: str
) -> Iterator[Settings]:
    """Settings on real Kafka, Redis and PostgreSQL, isolated for one test run: its own topic
    namespace, consumer group, Feast project and PostgreSQL schema (dropped at the end)."""
    with postgres_schema(postgres_url) as (run, database_url):
        yield make_settings(
            home,
            event_transport="kafka",
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_namespace=f"{run}.",
            consumer_group=f"nextbest-stream-{run}",
            online_store="redis",
            redis_url=redis_url,
            feast_project=run,
            database_url=database_url,
        )


@contextmanager
def postgres_schema(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema of its own for one test run (dropped at the end): its name and a
    database URL whose connections work in it."""
    run = f"r{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"create schema {run}"))
    try:
        # psycopg passes ``options`` to the server: every connection works in the schema.
        yield run, f"{postgres_url}?options=-csearch_path%3D{run}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {run} cascade"))
        admin.dispose()
