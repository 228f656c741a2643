"""What compose.yaml promises about trust, checked on the file (no Docker engine here): the
NextBest containers take only settings NextBest knows, get their API keys and signing key as
secrets, connect as the INSERT-only application role after the migration ran, and MLflow is
behind its basic-auth app, which the API and worker sign in to as a read-only user."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import yaml

from service.entrypoints.mlflow_users import USERS
from service.settings import load_settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "compose.yaml").read_text())
NEXTBEST = ("api", "worker", "trainer", "migrate")


def _environment(service: str) -> dict[str, str]:
    environment: dict[str, Any] = COMPOSE["services"][service]["environment"]
    # Interpolation as compose does it, with stand-ins for the passwords it requires.
    return {
        k: re.sub(r"\$\{(\w+)(:[-?][^}]*)?\}", lambda m: f"<{m.group(1)}>", str(v))
        for k, v in environment.items()
    }


def test_nextbest_containers_take_only_known_settings_and_start_in_production(tmp_path) -> None:
    for service in NEXTBEST:
        environment = _environment(service)
        settings = load_settings(
            {k: v for k, v in environment.items() if k.startswith("NEXTBEST_")}
            | {"NEXTBEST_HOME": str(tmp_path)}
        )
        assert settings.environment == "production"
        assert settings.api_keys_file == Path("/run/secrets/api-keys")
        assert settings.audit_signing_key_file == Path("/run/secrets/audit-signing-key")
        assert set(settings.checkpoint_sinks) == {"kafka", "folder"}
        assert set(COMPOSE["services"][service]["secrets"]) == {"api-keys", "audit-signing-key"}


def test_the_application_connects_as_its_role_and_only_the_migration_as_the_owner() -> None:
    for service in ("api", "worker", "trainer"):
        url = _environment(service)["NEXTBEST_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://nextbest_app:<APP_DB_PASSWORD>@")
        assert COMPOSE["services"][service]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    migrate = COMPOSE["services"]["migrate"]
    assert migrate["command"] == ["nextbest", "db", "migrate", "--app-role", "nextbest_app"]
    assert _environment("migrate")["NEXTBEST_DATABASE_URL"].startswith(
        "postgresql+psycopg://nextbest:<POSTGRES_PASSWORD>@"
    )
    assert "CREATE ROLE nextbest_app LOGIN" in COMPOSE["configs"]["postgres-init"]["content"]


def test_mlflow_needs_a_sign_in_and_the_api_reads_as_a_read_only_user() -> None:
    mlflow = COMPOSE["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    ini = configparser.ConfigParser()
    ini.read_string(COMPOSE["configs"]["mlflow-auth"]["content"])
    assert ini["mlflow"]["default_permission"] == "READ"
    for service in ("api", "worker"):
        assert _environment(service)["MLFLOW_TRACKING_USERNAME"] == "nextbest-reader"
    assert _environment("trainer")["MLFLOW_TRACKING_USERNAME"] == "nextbest-trainer"
    users = _environment("mlflow-users")
    assert set(USERS.values()) <= set(users) and users["MLFLOW_TRACKING_USERNAME"] == "admin"


def test_no_password_has_a_default() -> None:
    text = (Path(__file__).resolve().parents[2] / "compose.yaml").read_text()
    assert not re.findall(r"\$\{\w*(PASSWORD|SECRET)\w*:-", text)
