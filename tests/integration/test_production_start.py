"""Production trusts nothing it was not given: an API without its keys file or without the
audit's signing key refuses to start (rather than start healthy and fail every call), and a
command that would write the audit log ends before it decides anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from consent.rules.signed_note import Signer
from service.adapters.audit_checkpoints import AuditKeyError
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.auth import AuthConfigError, digest
from service.entrypoints.cli import main
from tests.conftest import make_settings


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys.json"
    entry = {"name": "ops", "role": "compliance", "sha256": digest("k" * 40)}
    path.write_text(json.dumps({"keys": [entry]}))
    return path


def _signing_key(tmp_path: Path) -> Path:
    path = tmp_path / "audit-signing.key"
    path.write_text(Signer.generate("bank.example/audit").encoded())
    return path


def test_without_its_keys_file_the_api_does_not_start(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home",
        environment="production",
        audit_signing_key_file=str(_signing_key(tmp_path)),
    )
    container = Container(settings)
    try:
        with (
            pytest.raises(AuthConfigError, match="NEXTBEST_API_KEYS_FILE"),
            TestClient(create_app(container)),
        ):
            pass
    finally:
        container.close()


def test_without_the_signing_key_the_api_does_not_start(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home", environment="production", api_keys_file=str(_keys_file(tmp_path))
    )
    container = Container(settings)
    try:
        with (
            pytest.raises(AuditKeyError, match="NEXTBEST_AUDIT_SIGNING_KEY"),
            TestClient(create_app(container)),
        ):
            pass
        assert not (settings.home / "secrets").exists()  # production never makes one up
    finally:
        container.close()


def test_with_both_it_starts_and_answers(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home",
        environment="production",
        api_keys_file=str(_keys_file(tmp_path)),
        audit_signing_key_file=str(_signing_key(tmp_path)),
    )
    container = Container(settings)
    try:
        with TestClient(create_app(container)) as client:
            verified = client.get("/v1/audit/verify", headers={"X-API-Key": "k" * 40})
            assert verified.status_code == 200 and verified.json()["ok"] is True
    finally:
        container.close()


def test_a_command_that_writes_the_log_ends_at_once_without_the_key(tmp_path: Path) -> None:
    env = {"NEXTBEST_HOME": str(tmp_path / "home"), "NEXTBEST_ENVIRONMENT": "production"}
    erased = CliRunner().invoke(main, ["erase", "C1", "--yes"], env=env)
    assert erased.exit_code == 2 and "NEXTBEST_AUDIT_SIGNING_KEY" in erased.output
    # Reading does not need it: an auditor's machine has only verifier keys.
    verified = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert verified.exit_code == 0, verified.output
