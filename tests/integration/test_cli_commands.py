"""The commands that write and read state: generate and load a bank, checkpoint, verify, export
and erase through the command line (the help and settings checks are in tests/unit/test_cli.py)."""

import json

from click.testing import CliRunner
from sqlalchemy import delete

from consent.rules.checkpoints import Publication
from consent.stores.customers import KnownCustomer
from consent.stores.tables import audit_log
from service.entrypoints.cli import main
from service.usecases.decision_messages import DecideForCustomer
from tests.doubles import GOOD_STANDING, decision_service, grant_all


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
    from service.adapters.local_log import LocalLog
    from service.adapters.transport import EVENTS_TOPIC
    from training.bank.spec import BankSpec
    from training.bank.store import write_bank

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
            times.append(parse_event(record.value or b"").occurred_at)
        except InvalidEvent:
            continue
    assert len(times) == summary["events"]
    assert times == sorted(times)


def test_checkpoint_verify_export_and_erase_from_the_command_line(embedded, tmp_path) -> None:
    env = {"NEXTBEST_HOME": str(embedded.settings.home)}
    service = decision_service(embedded.engine)
    service.directory.upsert([KnownCustomer("K1", "HK1", None, GOOD_STANDING)])
    grant_all(service.registry, "K1", "mobile_app")
    for customer in ("K1", "K1", "K2"):
        service.decide(DecideForCustomer(customer, "mobile_app"))

    cp = tmp_path / "cp.json"
    taken = CliRunner().invoke(main, ["audit", "checkpoint", "--out", str(cp)], env=env)
    assert taken.exit_code == 0, taken.output
    assert taken.output.splitlines()[1] == "3"  # a signed note: origin, size, root, ...
    assert Publication.from_json(cp.read_text()).size == 3
    verified = CliRunner().invoke(main, ["audit", "verify", "--checkpoint", str(cp)], env=env)
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.output)
    assert (report["ok"], report["covered"], report["sinks"]) == (
        True,
        3,
        {"given": 1, "folder": 1},
    )

    exported = CliRunner().invoke(main, ["audit", "export", "--customer", "K1"], env=env)
    assert exported.exit_code == 0 and len(exported.output.splitlines()) == 2
    later = CliRunner().invoke(main, ["audit", "export", "--since", "2999-01-01"], env=env)
    assert later.exit_code == 0 and later.output == ""

    erased = CliRunner().invoke(main, ["erase", "K1", "--yes"], env=env)
    assert erased.exit_code == 0, erased.output
    assert json.loads(erased.output)["audit_key"] is True
    gone = CliRunner().invoke(main, ["audit", "export", "--customer", "K1"], env=env)
    assert gone.output == ""
    still = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert still.exit_code == 0
    # The erasure's record too, covered by the checkpoint its command published on closing.
    assert (json.loads(still.output)["records"], json.loads(still.output)["covered"]) == (4, 4)

    # A cut-off tail is caught against the published checkpoints, with no manual step.
    with embedded.engine.begin() as connection:
        connection.execute(delete(audit_log).where(audit_log.c.seq >= 3))
    cut = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert cut.exit_code == 1
    assert "records 3 to 4 are missing" in json.loads(cut.output)["problem"]


def test_stream_refuses_partitions_the_local_log_does_not_have(tmp_path) -> None:
    from service.adapters.local_log import LocalLog

    home = tmp_path / "home"
    LocalLog(home / "events", partitions=2)
    two = {"NEXTBEST_HOME": str(home), "NEXTBEST_LOCAL_PARTITIONS": "2"}
    run = ["stream", "--until-idle", "0.1", "--no-alerts"]
    outside = CliRunner().invoke(main, [*run, "--partition", "2"], env=two)
    assert outside.exit_code == 2 and "not among the log's 2" in outside.output
    three = CliRunner().invoke(main, run, env={**two, "NEXTBEST_LOCAL_PARTITIONS": "3"})
    assert three.exit_code == 1 and "has 2 partition(s), not 3" in three.output
