import json

import pytest
from click.testing import CliRunner

from service.cli import main

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


def test_generate_writes_a_bank(tmp_path) -> None:
    out = tmp_path / "bank"
    result = CliRunner().invoke(
        main, ["generate", "--seed", "3", "--customers", "20", "--days", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["customers"] == 20 and summary["events"] > 100
    assert {p.name for p in out.iterdir()} == {
        "bank.json",
        "customers.parquet",
        "consents.parquet",
        "events",
        "outcomes.parquet",
        "truth.parquet",
        "malformed.parquet",
    }


def test_load_publishes_a_written_bank_in_event_time_order(tmp_path) -> None:
    from feature_repo.events import InvalidEvent, parse_event
    from service.transport import EVENTS_TOPIC, LocalLog
    from training.bank import BankSpec, write_bank

    summary = write_bank(
        BankSpec(seed=8, customers=50, days=6, malformed_fraction=0.01), tmp_path / "bank"
    )
    home = tmp_path / "home"
    result = CliRunner().invoke(
        main,
        ["load", "--bank", str(tmp_path / "bank"), "--rate", "100000"],
        env={"NEXTBEST_HOME": str(home)},
    )
    assert result.exit_code == 0, result.output
    sent = summary["events"] + summary["malformed_events"]
    assert f"published {sent} events" in result.output
    records = LocalLog(home / "events").consumer(EVENTS_TOPIC, "check").poll(sent + 10)
    assert len(records) == sent
    times = []
    for record in records:
        try:
            times.append(parse_event(record.value).occurred_at)
        except InvalidEvent:
            continue
    assert len(times) == summary["events"]
    assert times == sorted(times)
