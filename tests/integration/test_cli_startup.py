"""The command line starts without the heavy libraries: importing it, asking it for help and the
commands that need no models or feature store (the audit log, the policy) load none of them.
Held by what a fresh interpreter has imported, never by how long it took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consent import rules

HEAVY = ("feast", "mlflow", "lightgbm", "sklearn", "pandas", "fastapi")
NEXTBEST = str(Path(sys.executable).with_name("nextbest"))
POLICY = Path(rules.__file__).parent.parent / "policy.yaml"

#: Runs a command in-process, then prints, as its last line, the heavy libraries it imported.
RUN_AND_LIST_HEAVY = f"""
import json, sys
from service.entrypoints.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit as stop:
    if stop.code:
        raise
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r})))
"""


def _python(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["NEXTBEST_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = (
        "import service.entrypoints.cli, sys; print(sorted(m for m in sys.modules"
        f" if m.split('.')[0] in {set(HEAVY)!r}))"
    )
    imported = _python("-c", code)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"


def test_nextbest_help_lists_the_commands() -> None:
    shown = subprocess.run([NEXTBEST, "--help"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "Usage: nextbest" in shown.stdout
    for command in ("audit", "decide", "erase", "policy", "serve", "stream", "train"):
        assert f"  {command} " in shown.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "verify"],
        ["audit", "checkpoint"],
        ["audit", "export"],
        ["policy", "simulate", "--policy", str(POLICY)],
    ],
    ids=" ".join,
)
def test_commands_on_the_audit_log_and_policy_load_no_heavy_library(
    command: list[str], tmp_path: Path
) -> None:
    ran = _python("-c", RUN_AND_LIST_HEAVY, *command, home=tmp_path / "home")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1]) == []


def test_the_check_sees_a_heavy_library_a_command_imports(tmp_path: Path) -> None:
    """``generate`` builds its bank with pandas: the same check names it."""
    out = tmp_path / "bank"
    generate = ["generate", "--customers", "5", "--days", "2", "--workers", "1", "--out", str(out)]
    ran = _python("-c", RUN_AND_LIST_HEAVY, *generate, home=tmp_path / "home")
    assert ran.returncode == 0, ran.stderr
    assert "pandas" in json.loads(ran.stdout.splitlines()[-1])
