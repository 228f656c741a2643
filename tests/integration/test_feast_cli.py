"""Feast's own CLI on feature_repo/, against a state NextBest made: ``feast plan`` sees nothing to
change, and does see a changed definition."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from feature_repo.activity import FEATURE_NAMES
from feature_repo.store import REPO_DIR, StoreLocation, feast_environment
from service.bootstrap import Container
from tests.conftest import make_settings

FEAST = str(Path(sys.executable).parent / "feast")


@pytest.fixture(params=["sqlite", "redis"])
def live(request, tmp_path: Path) -> Iterator[StoreLocation]:
    """A state NextBest opened (and so applied) and wrote features into."""
    project = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        settings = make_settings(
            tmp_path / "home", online_store="redis", redis_url=redis_url, feast_project=project
        )
    else:
        settings = make_settings(tmp_path / "home", feast_project=project)
    container = Container(settings)
    as_of = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    container.features.write(
        pd.DataFrame(
            [{"customer_id": "C1", "event_timestamp": as_of, **dict.fromkeys(FEATURE_NAMES, 1.0)}]
        )
    )
    yield container.store_location
    container.close()


def feast(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``feast`` CLI of this venv, run in ``repo`` with only ``env`` of ours and Feast's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTBEST_", "FEAST_"))}
    return subprocess.run(
        [FEAST, *args],
        cwd=repo,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_feast_plan_in_feature_repo_sees_no_change_to_a_live_state(live: StoreLocation) -> None:
    plan = feast(["plan"], REPO_DIR, feast_environment(live))
    assert plan.returncode == 0, plan.stderr
    assert "No changes to registry" in plan.stdout, plan.stdout
    assert "No changes to infrastructure" in plan.stdout, plan.stdout


def test_feast_plan_shows_a_changed_definition(live: StoreLocation, tmp_path: Path) -> None:
    repo = tmp_path / "changed_repo"
    shutil.copytree(REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    with open(repo / "objects.py", "a") as objects:
        objects.write("\ncustomer_profile.ttl = __import__('datetime').timedelta(days=30)\n")
    env = feast_environment(live)
    if "FEAST_FS_YAML_FILE_PATH" in env:
        env["FEAST_FS_YAML_FILE_PATH"] = str(repo / Path(env["FEAST_FS_YAML_FILE_PATH"]).name)
    plan = feast(["plan"], repo, env)
    assert plan.returncode == 0, plan.stderr
    assert "Updated feature view customer_profile" in plan.stdout, plan.stdout
    assert "ttl" in plan.stdout
    assert "No changes to registry" not in plan.stdout


def test_feast_cli_refuses_to_run_without_an_absolute_state_folder(tmp_path: Path) -> None:
    # A relative NEXTBEST_HOME would name an empty state inside the source tree, where `feast
    # apply` would start a registry from nothing.
    repo = tmp_path / "repo"
    shutil.copytree(REPO_DIR, repo, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"NEXTBEST_HOME": "state", "NEXTBEST_FEAST_PROJECT": "nextbest"}
    plan = feast(["apply"], repo, env)
    assert plan.returncode != 0
    assert "set NEXTBEST_HOME to the absolute path" in plan.stderr
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        p.name for p in REPO_DIR.iterdir() if p.name != "__pycache__"
    )
