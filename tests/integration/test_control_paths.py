"""Issue 21: a customer in the universal control group never receives a sales action, on any
path (the decision API on every channel, RM alerts, alerts that reach the RM after the share
was raised, batch scoring's list); and every decision record keeps her group and what became
of each chosen sales action. The audit log as a whole
holds no sales action delivered to a member of the control group. On the embedded SQLite and
on the real PostgreSQL; features and models are doubles that make every customer a strong
candidate, so each sales action withheld is withheld by the control group alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consent.rules.control_checks import HOLDOUT_RULE, UNIVERSAL_RULE, in_universal_control
from consent.rules.params import UniversalControlParams
from consent.rules.policy import Policy
from consent.rules.vocabulary import NEEDS, ContactChannel
from consent.stores.customers import KnownCustomer
from service.adapters.alert_store import AlertStore
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.usecases.alert_policy import AlertPolicy
from service.usecases.alerter import Alerter
from service.usecases.ports import FixedModels
from service.usecases.regate import AlertGate
from service.usecases.scoring import eligible
from tests.conftest import key_headers, make_settings
from tests.doubles import (
    GOOD_STANDING,
    ConfidentModel,
    EveryoneEngaged,
    decision_service,
    grant_all,
)
from tests.integration.conftest import fresh_schema

RM = "RM0001"
CHANNELS: tuple[ContactChannel, ...] = ("mobile_app", "email", "rm")
POLICY = Policy.load()


def _universal(policy: Policy) -> UniversalControlParams:
    rule = policy.rule(UNIVERSAL_RULE)
    assert rule is not None and isinstance(rule.params, UniversalControlParams)
    return rule.params


def _customers(in_control: int, treated: int) -> tuple[list[str], list[str]]:
    """The first ids the packaged policy puts in the universal control group, and out of it."""
    control: list[str] = []
    rest: list[str] = []
    for n in range(100_000):
        customer_id = f"C{n:07d}"
        group = control if in_universal_control(_universal(POLICY), customer_id) else rest
        group.append(customer_id)
        if len(control) >= in_control and len(rest) >= treated:
            return control[:in_control], rest[:treated]
    raise AssertionError("not enough customers in the first 100,000 ids")


CONTROL, TREATED = _customers(in_control=4, treated=12)
_NOW = datetime.now(UTC)
#: The latest noon (UTC) before the test runs.
WORKING_HOUR = _NOW.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(
    days=_NOW.hour < 12
)


@pytest.fixture(params=["sqlite", "postgres"])
def deciding(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    def open_(overrides: dict[str, str]) -> Iterator[Container]:
        container = Container(make_settings(tmp_path / "home", **overrides))
        container.models = FixedModels({n: ConfidentModel(n) for n in NEEDS})  # type: ignore[assignment]
        container.decisions = decision_service(container.engine, EveryoneEngaged())
        # Decided in working hours: email is held back in quiet hours (21:00-08:00, the
        # customers' UTC), which would leave a control customer nothing she would have got.
        container.decisions.clock = lambda: WORKING_HOUR
        for customer_id in CONTROL + TREATED:
            container.directory.upsert([KnownCustomer(customer_id, None, RM, GOOD_STANDING)])
            for channel in CHANNELS:
                grant_all(container.registry, customer_id, channel)
        try:
            yield container
        finally:
            container.close()

    if request.param == "sqlite":
        yield from open_({})
        return
    with fresh_schema(request.getfixturevalue("postgres_url")) as engine:
        yield from open_({"database_url": engine.url.render_as_string(hide_password=False)})


def _kinds(container: Container, actions: list[dict[str, Any]]) -> set[str]:
    return {container.catalog.actions[a["action_id"]].kind for a in actions}


def test_the_api_delivers_no_sales_action_to_the_control_group_on_any_channel(
    deciding: Container,
) -> None:
    container = deciding
    headers = key_headers(container, "compliance")
    delivered: dict[str, set[str]] = {"control": set(), "treatment": set()}
    with TestClient(create_app(container)) as client:
        for customer_id in CONTROL + TREATED:
            for channel in CHANNELS:
                response = client.post(
                    "/v1/decisions",
                    json={"customer_id": customer_id, "channel": channel},
                    headers=headers,
                )
                assert response.status_code == 200, response.text
                body = response.json()
                record = container.audit.get(body["decision_id"])
                assert record is not None
                control = record["record"]["control"]
                group = "control" if customer_id in CONTROL else "treatment"
                assert control["group"] == group
                delivered[group] |= _kinds(container, body["actions"])
                if group == "control":
                    # What she would have got is named, with the share as its probability.
                    assert control["actions"], "every customer is a strong candidate"
                    assert {a["assignment"] for a in control["actions"].values()} == {
                        "universal_control"
                    }
                    codes = {c for s in body["suppressed"] for c in s["reason_codes"]}
                    assert "UNIVERSAL_CONTROL" in codes
    assert "sales" not in delivered["control"]
    # Not vacuous: the same doubles deliver sales to the treatment group.
    assert "sales" in delivered["treatment"]
    _no_sales_to_control_in_the_log(container)


def test_rm_alerts_are_never_raised_for_the_control_group_and_are_withdrawn_when_it_grows(
    deciding: Container, tmp_path: Path
) -> None:
    container = deciding
    decisions = container.decisions
    policy = AlertPolicy.load(decisions.catalog).model_copy(update={"rm_daily_capacity": 100})
    store = AlertStore(container.engine)
    alerter = Alerter(decisions, store, policy, decisions.catalog, container.alert_memory())
    raised = alerter.process(dict.fromkeys(CONTROL + TREATED))
    customers = {a.customer_id for a in raised}
    assert customers and not customers & set(CONTROL)
    assert all(container.catalog.actions[a.action_id].kind == "sales" for a in raised)

    # The bank raises the share: some treated customers join the control group, keeping the
    # members they had; their open sales alerts are withdrawn when they reach the RM.
    text = (Path(__file__).parents[2] / "consent" / "policy.yaml").read_text()
    share = _universal(POLICY).share
    assert f"share: {share}" in text
    raised_share = tmp_path / "policy.yaml"
    raised_share.write_text(text.replace(f"share: {share}", "share: 0.5"))
    grown = Policy.load(raised_share)
    joined = {c for c in customers if in_universal_control(_universal(grown), c)}
    assert joined, "half the treated customers join at 50%"
    assert all(in_universal_control(_universal(grown), c) for c in CONTROL)  # nested
    gate = AlertGate(
        decisions.reads, grown, decisions.catalog, decisions.audit, policy.regate_rules
    )
    regated = gate.check(raised, datetime.now(UTC), "list")
    withdrawn = {a.customer_id for a in regated.withdrawn}
    assert withdrawn == joined
    for alert in regated.withdrawn:
        assert alert.withdrawal is not None
        assert alert.withdrawal.reason_codes == ("UNIVERSAL_CONTROL",)
    _no_sales_to_control_in_the_log(container)


def test_batch_scoring_leaves_the_control_group_out_and_counts_it(deciding: Container) -> None:
    container = deciding
    now = datetime.now(UTC)
    result = eligible(container, now, now)
    assert set(result.customers) == set(TREATED)
    assert result.by_reason_code["UNIVERSAL_CONTROL"] == len(CONTROL)


def _no_sales_to_control_in_the_log(container: Container) -> None:
    """Across the whole audit log: no record of the control group delivers a sales action, and
    a held-out action is never delivered."""
    seen = 0
    for entry in container.audit.export():
        record = entry["record"]
        control = record.get("control")
        if control is None:
            continue
        seen += 1
        kinds = {c["action_id"]: c["kind"] for c in record["candidates"]}
        delivered = record["delivered"]
        if control["group"] == "control":
            assert not [a for a in delivered if kinds[a] == "sales"], record["decision_id"]
        for candidate in record["candidates"]:
            held = [r for r in candidate["rules"] if isinstance(r, dict)]
            if any(r["rule_id"] in (UNIVERSAL_RULE, HOLDOUT_RULE) for r in held):
                assert candidate["action_id"] not in delivered
    assert seen
