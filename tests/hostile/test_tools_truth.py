"""Scenario 9: the compliance tools tell the truth. ``nextbest policy simulate`` with an unchanged
copy of the policy reports exactly zero changes on a set of recorded decisions that exercises
every rule (stale features included); ``nextbest decide`` refuses what the API refuses and then
writes nothing to the audit log; a customer the directory does not know gets one clear outcome
(``CUSTOMER_UNKNOWN``) and a record with no invented facts. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import shutil
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from consent.rules.model import ConsentGiven, CustomerFacts
from consent.rules.policy import Policy
from consent.rules.simulate import replay
from consent.rules.vocabulary import ConsentChannel, ContactChannel, Purpose
from consent.stores.contacts import ContactMade
from consent.stores.customers import KnownCustomer
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.cli import main
from service.usecases.decision_making import CUSTOMER_UNKNOWN
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.decisions import DecisionService
from tests.conftest import key_headers, make_settings, postgres_schema
from tests.doubles import GOOD_STANDING, EveryoneEngaged, decision_service, grant_all

POLICY = Path(__file__).parents[2] / "consent" / "policy.yaml"
#: Feature ages: fresh, 1-day windows stale, 7-day windows stale (the doubles' model depends
#: on a 7-day feature), everything but the profile stale.
AGES = (timedelta(minutes=1), timedelta(days=2), timedelta(days=5), timedelta(days=60))
#: Customers that between them meet every rule of the policy.
FACTS: dict[str, CustomerFacts] = {
    "good": GOOD_STANDING,
    "vulnerable": GOOD_STANDING.model_copy(update={"vulnerable": True}),
    "aml": GOOD_STANDING.model_copy(update={"aml_flag": True}),
    "do_not_contact": GOOD_STANDING.model_copy(update={"do_not_contact": True}),
    "arrears": GOOD_STANDING.model_copy(update={"in_arrears": True, "debt_to_income": 0.7}),
    "kyc_pending": GOOD_STANDING.model_copy(update={"kyc_status": "pending"}),
    "cautious": GOOD_STANDING.model_copy(update={"risk_level": 1}),
    "young": GOOD_STANDING.model_copy(update={"age": 19, "income": 12_000}),
    "complaint": GOOD_STANDING.model_copy(update={"open_complaint": True}),
}
CHANNELS: tuple[ContactChannel, ...] = ("mobile_app", "rm", "email")
_SERVICES: weakref.WeakKeyDictionary[Engine, DecisionService] = weakref.WeakKeyDictionary()


@pytest.fixture(params=["sqlite", "postgresql"])
def bank(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Container, dict[str, str]]]:
    """A container on SQLite or on the real PostgreSQL (its own schema), and the environment
    that points the CLI at the same state."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        container = Container(make_settings(home))
        yield container, {"NEXTBEST_HOME": str(home)}
        container.close()
        return
    postgres_url = request.getfixturevalue("postgres_url")
    with postgres_schema(postgres_url) as (_, database_url):
        container = Container(make_settings(home, database_url=database_url))
        yield container, {"NEXTBEST_HOME": str(home), "NEXTBEST_DATABASE_URL": database_url}
        container.close()


def _record_decisions(service_for: dict[timedelta, DecisionService]) -> int:
    """One decision per customer kind x feature age x channel, some after a recent decline,
    some without profiling consent; returns how many were made."""
    made = 0
    any_service = next(iter(service_for.values()))
    now = datetime.now(UTC)
    for kind, facts in FACTS.items():
        for a, age in enumerate(AGES):
            customer = f"T-{kind}-{a}"
            any_service.directory.upsert([KnownCustomer(customer, f"H-{customer}", None, facts)])
            grant_all(any_service.registry, customer, "mobile_app")
            grant_all(any_service.registry, customer, "rm")
            if a % 2:
                any_service.contacts.record(
                    [
                        ContactMade(
                            customer_id=customer,
                            occurred_at=now - timedelta(days=3),
                            channel="mobile_app",
                            kind="decline",
                            action_id="mortgage_consultation",
                            need="mortgage",
                        )
                    ]
                )
            for channel in CHANNELS:
                service_for[age].decide(DecideForCustomer(customer, channel))
                made += 1
    return made


def test_an_unchanged_policy_replays_with_zero_changes(bank, tmp_path: Path) -> None:
    container, env = bank
    services = {age: decision_service(container.engine, EveryoneEngaged(age)) for age in AGES}
    made = _record_decisions(services)
    records = [e["record"] for e in container.audit.export()]
    # The set is worth replaying: freshness withheld some actions, other rules others.
    failed = {
        r["rule_id"]
        for record in records
        for c in record["candidates"]
        for r in c["rules"]
        if isinstance(r, dict)
    }
    assert {"features.fresh", "customer.vulnerable", "customer.aml", "contact.cooloff"} <= failed
    assert sum(len(r["delivered"]) for r in records) > 0

    unchanged = tmp_path / "policy-copy.yaml"
    shutil.copy(POLICY, unchanged)
    result = CliRunner().invoke(main, ["policy", "simulate", "--policy", str(unchanged)], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["policy_version"] == report["current_policy_version"]
    assert report["decisions"] == report["replayed"] == made
    assert report["not_replayable"] == 0
    assert report["changed_decisions"] == 0
    assert report["actions_added"] == report["actions_removed"] == 0
    assert report["newly_allowed_by_rule"] == {} and report["newly_suppressed_by_rule"] == {}
    assert report["delivered_before"] == report["delivered_after"] > 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    facts=st.sampled_from(sorted(FACTS)),
    age=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=90)),
    channel=st.sampled_from(CHANNELS),
    profiling=st.booleans(),
    limit=st.integers(1, 10),
)
def test_any_recorded_decision_replays_unchanged(
    embedded: Container,
    facts: str,
    age: timedelta,
    channel: ContactChannel,
    profiling: bool,
    limit: int,
) -> None:
    # One service for every example: each opens its own connection pools.
    service = _SERVICES.get(embedded.engine)
    if service is None:
        service = _SERVICES[embedded.engine] = decision_service(embedded.engine)
    service.features = EveryoneEngaged(age)
    customer = f"P-{facts}"
    service.directory.upsert([KnownCustomer(customer, "HP", None, FACTS[facts])])
    grant_all(service.registry, customer, channel)
    if not profiling:
        service.registry.record([_withdrawn(customer, "profiling", "any")])
    made = service.decide(DecideForCustomer(customer, channel, limit))
    report = replay(
        [json.loads(made.record.model_dump_json())], Policy.load(POLICY), service.catalog
    )
    assert report.replayed == 1
    assert report.changed_decisions == 0 and not report.added and not report.removed
    assert not report.newly_allowed and not report.newly_suppressed


def _withdrawn(customer: str, purpose: Purpose, channel: ConsentChannel) -> ConsentGiven:
    return ConsentGiven(
        customer_id=customer,
        purpose=purpose,
        channel=channel,
        granted=False,
        recorded_at=datetime.now(UTC),
        source="test",
        notice_version="v1",
    )


def test_decide_refuses_what_the_api_refuses_and_logs_nothing(bank) -> None:
    container, env = bank
    container.directory.upsert([KnownCustomer("C0000042", "H42", None, GOOD_STANDING)])
    client = TestClient(create_app(container))
    for customer, channel, problem in (
        ("C0000042", "carrier_pigeon", "channel"),
        ("C00\n42", "mobile_app", "customer_id"),
        ("", "mobile_app", "customer_id"),
        ("C" * 65, "rm", "customer_id"),
    ):
        api = client.post(
            "/v1/decisions",
            json={"customer_id": customer, "channel": channel},
            headers=key_headers(container, "channel"),
        )
        assert api.status_code == 422
        result = CliRunner().invoke(main, ["decide", customer, "--channel", channel], env=env)
        assert result.exit_code == 2, result.output
        assert "invalid decision request" in result.output and problem in result.output
    assert list(container.audit.export()) == []
    assert container.audit.verify().records == 0
    # The other commands that take a customer id check it the same way.
    for command in (["erase", "C00\n42", "--yes"], ["audit", "export", "--customer", "a b"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 2 and "customer id" in result.output, result.output
    result = CliRunner().invoke(main, ["rollback", "--need", "yacht"], env=env)
    assert result.exit_code == 2 and "yacht" in result.output


def test_an_unknown_customer_gets_one_clear_outcome(bank) -> None:
    container, env = bank
    client = TestClient(create_app(container))
    grant_all(container.registry, "C0009999", "mobile_app")  # consent, but not a customer
    for role in ("channel", "compliance"):
        answer = client.post(
            "/v1/decisions",
            json={"customer_id": "C0009999", "channel": "mobile_app"},
            headers=key_headers(container, role),
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["actions"] == [] and body["models"] == {}
        assert [n["code"] for n in body["notices"]] == [CUSTOMER_UNKNOWN]
        assert body["suppressed"] in (None, [])
    result = CliRunner().invoke(main, ["decide", "C0009999", "--channel", "rm"], env=env)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    records = [e["record"] for e in container.audit.export(customer_id="C0009999")]
    assert len(records) == 3 and printed["decision_id"] == records[-1]["decision_id"]
    for record in records:
        assert record["reason_codes"] == [CUSTOMER_UNKNOWN]
        assert record["delivery_status"] == "withheld"
        assert record["candidates"] == [] and record["delivered"] == []
        # Nothing invented and nothing relied on: no facts, consents, features or scores.
        assert record["gate"]["facts"] is None and record["gate"]["contacts"] == []
        assert record["consents_relied_on"] == [] and record["features"] == []
        assert record["models"] == []
    assert container.audit.verify().ok
