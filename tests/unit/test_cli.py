import pytest
from click.testing import CliRunner

from service.entrypoints.cli import main

COMMANDS = [
    [],
    ["generate"],
    ["load"],
    ["stream"],
    ["train"],
    ["serve"],
    ["decide"],
    ["demo"],
    ["audit"],
    ["audit", "verify"],
    ["audit", "export"],
    ["audit", "checkpoint"],
    ["audit", "proof"],
    ["audit", "consistency"],
    ["audit", "key"],
    ["db"],
    ["db", "migrate"],
    ["keys"],
    ["keys", "api"],
    ["keys", "audit"],
    ["policy"],
    ["policy", "simulate"],
    ["alerts"],
    ["alerts", "labels"],
    ["erase"],
    ["backfill"],
    ["retrain"],
    ["rollback"],
    ["score"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "nextbest")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert "Show this message and exit." in result.output


def test_a_mistyped_setting_stops_the_cli_with_a_clear_message() -> None:
    result = CliRunner().invoke(main, ["audit", "verify"], env={"NEXTBEST_ONLINESTORE": "redis"})
    assert result.exit_code == 2
    assert "unknown setting(s) NEXTBEST_ONLINESTORE" in result.output
