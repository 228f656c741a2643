"""`nextbest policy simulate`: recorded decisions replayed under a changed policy report what
would be added or removed, by rule and by action; the same policy changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from consent.rules.policy import Policy
from consent.rules.simulate import replay
from consent.stores.customers import KnownCustomer
from service.bootstrap import Container
from service.entrypoints.cli import main
from service.usecases.decision_messages import DecideForCustomer
from tests.doubles import GOOD_STANDING, decision_service, grant_all

POLICY = Path(__file__).parents[2] / "consent" / "policy.yaml"


def _changed(tmp_path: Path, rule_id: str, **params: object) -> Path:
    document = yaml.safe_load(POLICY.read_text())
    rule = next(r for r in document["rules"] if r["id"] == rule_id)
    rule.setdefault("params", {}).update(params)
    path = tmp_path / "new-policy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _without(tmp_path: Path, rule_id: str) -> Path:
    document = yaml.safe_load(POLICY.read_text())
    document["rules"] = [r for r in document["rules"] if r["id"] != rule_id]
    path = tmp_path / "new-policy.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _decide_for_a_few(embedded: Container) -> list[str]:
    service = decision_service(embedded.engine)
    vulnerable = GOOD_STANDING.model_copy(update={"vulnerable": True})
    service.directory.upsert(
        [
            KnownCustomer("S1", "HS1", None, GOOD_STANDING),
            KnownCustomer("S2", "HS2", None, GOOD_STANDING),
            KnownCustomer("S3", "HS3", None, vulnerable),
        ]
    )
    delivered = []
    for customer in ("S1", "S2", "S3"):
        grant_all(service.registry, customer, "mobile_app")
        made = service.decide(DecideForCustomer(customer, "mobile_app"))
        delivered.append(",".join(made.record.delivered))
    return delivered


def test_the_same_policy_changes_nothing(embedded) -> None:
    _decide_for_a_few(embedded)
    records = [e["record"] for e in embedded.audit.export()]
    report = replay(records, Policy.load(), embedded.catalog)
    assert report.replayed == 3 and report.not_replayable == 0
    assert report.changed_decisions == 0 and not report.added and not report.removed
    assert not report.newly_suppressed and not report.newly_allowed


def test_a_stricter_rule_removes_actions_and_names_the_rule(embedded, tmp_path) -> None:
    delivered = _decide_for_a_few(embedded)
    assert all("mortgage_consultation" in d for d in delivered[:2])  # DTI 0.1 passes 0.45
    records = [e["record"] for e in embedded.audit.export()]
    stricter = Policy.load(_changed(tmp_path, "lending.affordability", max_debt_to_income=0.05))
    report = replay(records, stricter, embedded.catalog)
    # S1 and S2 lose every lending action; S3 (vulnerable) had none to lose.
    assert report.removed["mortgage_consultation"] == 2
    assert report.removed_by_rule["lending.affordability"] == sum(report.removed.values())
    assert report.newly_suppressed["lending.affordability"] >= 2
    # Each freed slot goes to the next action in priority that passes every rule.
    assert report.changed_decisions == 2
    assert sum(report.added.values()) == 2 and "mortgage_consultation" not in report.added


def test_dropping_a_rule_adds_actions_through_the_cli(embedded, tmp_path) -> None:
    delivered = _decide_for_a_few(embedded)
    assert delivered[2] == "" or "mortgage_consultation" not in delivered[2]  # vulnerable: no sales
    result = CliRunner().invoke(
        main,
        ["policy", "simulate", "--policy", str(_without(tmp_path, "customer.vulnerable"))],
        env={"NEXTBEST_HOME": str(embedded.settings.home)},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["replayed"] == 3
    assert report["actions_added"] >= 1 and report["actions_removed"] == 0
    assert set(report["newly_allowed_by_rule"]) == {"customer.vulnerable"}
    assert report["policy_version"] != report["current_policy_version"]


def test_a_bad_policy_file_fails_with_a_clear_message(embedded, tmp_path) -> None:
    bad = _changed(tmp_path, "contact.caps", caps=[{"channel": "any", "window_days": -1, "max": 2}])
    result = CliRunner().invoke(
        main,
        ["policy", "simulate", "--policy", str(bad)],
        env={"NEXTBEST_HOME": str(embedded.settings.home)},
    )
    assert result.exit_code != 0
    assert "window_days" in result.output
