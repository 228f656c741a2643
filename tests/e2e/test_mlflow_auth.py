"""The MLflow server as compose runs it, behind its basic-auth app: nobody reads or writes the
registry without signing in, NextBest's reader (the API, the worker) may read and download a
model but not move an alias, and the trainer that registered a model may."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from service.entrypoints.mlflow_users import ensure_users
from tests.proxy import free_port

ADMIN_PASSWORD = "admin-password-for-the-test"
PASSWORDS = {"nextbest-trainer": "trainer-password", "nextbest-reader": "reader-password"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow-auth")
    config = home / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{home / 'auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = os.environ | {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # What compose's mlflow service sets: a key of its own for the forms' CSRF tokens.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-secret-for-the-test",
    }
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(home / "artifacts"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert process.poll() is None, (home / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _as(user: str, password: str, monkeypatch: pytest.MonkeyPatch, url: str) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    mlflow.set_tracking_uri(url)
    return MlflowClient(url)


def test_only_the_trainer_may_change_the_registry_and_the_reader_may_read(
    server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{server}/api/2.0/mlflow/registered-models/search", timeout=5)
    assert anonymous.value.code == 401

    _as("admin", ADMIN_PASSWORD, monkeypatch, server)
    assert ensure_users(server, PASSWORDS) == list(PASSWORDS)
    assert ensure_users(server, PASSWORDS) == []  # idempotent: the job runs at every start

    trainer = _as("nextbest-trainer", PASSWORDS["nextbest-trainer"], monkeypatch, server)
    experiment = trainer.create_experiment("nextbest-auth-test")
    artifact = tmp_path / "booster.txt"
    artifact.write_text("tree\n")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(artifact), "model")
    trainer.create_registered_model("nextbest-auth-test")
    version = trainer.create_model_version(
        "nextbest-auth-test", f"runs:/{run.info.run_id}/model", run.info.run_id
    ).version
    trainer.set_registered_model_alias("nextbest-auth-test", "champion", version)

    reader = _as("nextbest-reader", PASSWORDS["nextbest-reader"], monkeypatch, server)
    found = reader.get_model_version_by_alias("nextbest-auth-test", "champion")
    assert str(found.version) == str(version)
    folder = Path(mlflow.artifacts.download_artifacts("models:/nextbest-auth-test@champion"))
    assert (folder / "booster.txt").read_text() == "tree\n"
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied"):
        reader.set_registered_model_alias("nextbest-auth-test", "champion", "1")
    with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied"):
        reader.create_model_version(
            "nextbest-auth-test", f"runs:/{run.info.run_id}/model", run.info.run_id
        )
