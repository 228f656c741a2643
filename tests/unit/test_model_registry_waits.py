"""A serving process's waits for the MLflow registry are bounded: a registry that accepts
connections and never answers costs a refresh one bounded wait, and the loaded models keep
serving. The registry here is a listening socket that never answers (the kernel completes the
connections; nothing reads them)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)

from service.adapters.models import ModelSet


@pytest.fixture
def silent_registry() -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_mlflow_reads_the_bounds_the_service_sets() -> None:
    """service/__init__.py sets them before MLflow is used; each must parse as MLflow's own
    type (a value it cannot read fails every request to the registry) and stay far below
    MLflow's defaults (120 s a request, 7 retries with a growing backoff: minutes)."""
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() <= 10
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() <= 2
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() <= 1


def test_a_registry_that_never_answers_costs_a_refresh_one_bounded_wait(
    silent_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One second per request and no retry (an operator's values win over the service's):
    # seven needs asked in turn would take seven seconds.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    models = ModelSet(silent_registry, "champion")
    began = time.monotonic()
    assert models.refresh() == {}
    assert time.monotonic() - began < 3.0  # one wait of 1 s, with a margin for a busy machine
    assert len(models) == 0
