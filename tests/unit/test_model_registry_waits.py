"""A serving process's waits for the MLflow registry are bounded: a registry that accepts
connections and never answers costs a refresh one bounded wait, and the loaded models keep
serving. The registry here accepts connections, counts them and never answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)

from service.adapters.models import ModelSet


@dataclass
class SilentRegistry:
    url: str
    held: list[socket.socket] = field(default_factory=list)  # accepted, never answered


@pytest.fixture
def silent_registry() -> Iterator[SilentRegistry]:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        registry = SilentRegistry(f"http://127.0.0.1:{listener.getsockname()[1]}")

        def accept() -> None:
            while True:
                try:
                    registry.held.append(listener.accept()[0])
                except OSError:  # the listener was closed: the test is over
                    return

        threading.Thread(target=accept, daemon=True).start()
        try:
            yield registry
        finally:
            for connection in registry.held:
                connection.close()


def test_mlflow_reads_the_bounds_the_service_sets() -> None:
    """service/__init__.py sets them before MLflow is used; each must parse as MLflow's own
    type (a value it cannot read fails every request to the registry) and stay far below
    MLflow's defaults (120 s a request, 7 retries with a growing backoff: minutes)."""
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() <= 10
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() <= 2
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() <= 1


def test_a_registry_that_never_answers_costs_a_refresh_one_bounded_wait(
    silent_registry: SilentRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One second per request and no retry (an operator's values win over the service's).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    models = ModelSet(silent_registry.url, "champion")
    assert models.refresh() == {}
    # One request that timed out, and the refresh gave up: the seven needs were not each asked
    # in turn (seven waits), and the request was not retried.
    assert len(silent_registry.held) == 1
    assert len(models) == 0
