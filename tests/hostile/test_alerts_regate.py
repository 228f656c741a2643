"""Issue 17, scenario 3: an RM alert passes the gate again whenever it reaches the RM.

An open and a queued alert for a customer, then a consent withdrawal (and separately a
vulnerability flag, and a do-not-contact request): neither shows as actionable in
``GET /v1/alerts`` nor in what the inbox page reads, the sweep does not open the queued one, and
a disposition gets 409 with the reason. The withdrawal is in the audit log as a record that
corrects the alert's decision, and the chain verifies. A customer whose situation did not change
keeps their alerts (the test would pass vacuously otherwise). When consent cannot be read, the
alerts are held back (503 for a disposition) and come back when it can. On the embedded SQLite
and on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from consent.stores.customers import KnownCustomer
from consent.stores.tables import consent_history
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.usecases.alert_model import Alert
from tests.conftest import key_headers, make_settings
from tests.doubles import GOOD_STANDING, grant_all, sample_alert
from tests.integration.conftest import fresh_schema

RM = "RM0001"  # the development RM key's
CHANGED, UNCHANGED = "C0000001", "C0000002"
#: What the inbox page (service/entrypoints/static/inbox.js) reads every two seconds.
INBOX = "/v1/alerts?status=open&limit=200"


@pytest.fixture(params=["sqlite", "postgres"])
def api(request, tmp_path: Path) -> Iterator[tuple[Container, TestClient]]:
    def serve(overrides: dict[str, str]) -> Iterator[tuple[Container, TestClient]]:
        container = Container(make_settings(tmp_path / "home", **overrides))
        try:
            with TestClient(create_app(container)) as client:
                yield container, client
        finally:
            container.close()

    if request.param == "sqlite":
        yield from serve({})
        return
    with fresh_schema(request.getfixturevalue("postgres_url")) as engine:
        yield from serve({"database_url": engine.url.render_as_string(hide_password=False)})


def _alert(customer_id: str, action_id: str, need: str, priority: float) -> Alert:
    return sample_alert(customer_id, RM, f"alert-{action_id}-{customer_id}").model_copy(
        update=dict(
            topic=need,
            need=need,
            action_id=action_id,
            priority=priority,
            decision_id=str(uuid.uuid4()),  # the audit log refuses a record naming the customer
        )
    )


def _raised(container: Container) -> dict[str, Alert]:
    """For each customer: known, with RM consent; an open mortgage alert and a queued
    term-deposit alert (the RM's capacity was used up when they were raised; the sweep would
    open the queued one now, as the alerter's capacity is 20 a day)."""
    for customer_id in (CHANGED, UNCHANGED):
        container.directory.upsert([KnownCustomer(customer_id, None, RM, GOOD_STANDING)])
        grant_all(container.registry, customer_id, "rm")
    new = [
        _alert(c, action, need, priority)
        for c in (CHANGED, UNCHANGED)
        for action, need, priority in (
            ("mortgage_consultation", "mortgage", 90.0),
            ("term_deposit_offer", "term_deposit", 10.0),
        )
    ]
    stored = container.alert_store.add(new, 2, datetime.now(UTC))
    assert sorted(a.status for a in stored) == ["open", "open", "queued", "queued"]
    return {a.alert_id: a for a in stored}


def _withdraw_consent(container: Container, client: TestClient) -> None:
    body = {
        "consents": [
            {
                "purpose": "marketing",
                "channel": "rm",
                "granted": False,
                "source": "branch",
                "notice_version": "v1",
            }
        ]
    }
    path = f"/v1/customers/{CHANGED}/consents"
    response = client.put(path, json=body, headers=key_headers(container, "channel"))
    assert response.status_code == 200, response.text


def _flag(**facts: Any) -> Callable[[Container, TestClient], None]:
    def apply(container: Container, _: TestClient) -> None:
        flagged = GOOD_STANDING.model_copy(update=facts)
        container.directory.upsert([KnownCustomer(CHANGED, None, RM, flagged)])

    return apply


#: (what changes, the reason code compliance reads, what the RM is told)
CHANGES = {
    "consent withdrawn": (
        _withdraw_consent,
        "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL",
        "consent_withdrawn",
    ),
    "flagged vulnerable": (_flag(vulnerable=True), "VULNERABLE_CUSTOMER", "not_allowed"),
    "do not contact": (_flag(do_not_contact=True), "DO_NOT_CONTACT", "not_allowed"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_customer_s_alerts_are_withdrawn_wherever_they_would_reach_the_rm(
    api, change: str
) -> None:
    container, client = api
    apply, code, notice = CHANGES[change]
    rm, compliance = key_headers(container, "rm"), key_headers(container, "compliance")
    raised = _raised(container)
    opened = f"alert-mortgage_consultation-{CHANGED}"
    queued = f"alert-term_deposit_offer-{CHANGED}"
    assert (raised[opened].status, raised[queued].status) == ("open", "queued")

    apply(container, client)

    # The sweep (the alerter's, every second) does not open the queued one: it withdraws it.
    swept = {a.alert_id: a for a in container.alert_inbox.sweep()}
    assert swept[queued].status == "withdrawn" and swept[queued].opened_at is None
    stored = container.alert_store.get(queued)
    assert stored is not None and (stored.status, stored.opened_at) == ("withdrawn", None)
    # The unchanged customer's queued alert opened: the sweep did open what still passes.
    assert swept[f"alert-term_deposit_offer-{UNCHANGED}"].status == "open"

    # Neither is actionable in what the inbox page reads, nor in any list of open or queued.
    inbox = client.get(INBOX, headers=rm)
    assert inbox.status_code == 200, inbox.text
    assert {a["customer_id"] for a in inbox.json()["alerts"]} == {UNCHANGED}
    for status in ("open", "queued"):
        for who in (rm, compliance):
            listed = client.get("/v1/alerts", params={"status": status}, headers=who).json()
            assert CHANGED not in {a["customer_id"] for a in listed["alerts"]}

    # The RM sees that the alert they had was withdrawn, not why beyond the notice, and not
    # what was to be said; the queued one never reached them.
    everything = client.get("/v1/alerts", headers=rm).json()["alerts"]
    theirs = [a for a in everything if a["customer_id"] == CHANGED]
    assert [a["alert_id"] for a in theirs] == [opened]
    [seen] = theirs
    assert seen["status"] == "withdrawn"
    assert seen["withdrawal"]["notice"] == notice
    assert seen["withdrawal"]["reason_codes"] == []
    assert seen["talking_points"] == [] and seen["reasons"] == [] and seen["score"] is None
    # Compliance reads the reason codes, and each withdrawal's record in the audit log.
    checked = client.get("/v1/alerts", params={"status": "withdrawn"}, headers=compliance)
    withdrawn = {a["alert_id"]: a for a in checked.json()["alerts"]}
    assert set(withdrawn) == {opened, queued}
    for alert_id, alert in withdrawn.items():
        assert alert["withdrawal"]["reason_codes"] == [code]
        path = f"/v1/audit/decisions/{alert['withdrawal']['decision_id']}"
        entry = client.get(path, headers=compliance)
        assert entry.status_code == 200, entry.text
        record = entry.json()["record"]
        assert record["corrects"] == raised[alert_id].decision_id
        assert (record["delivery_status"], record["delivered"]) == ("withheld", [])
        assert record["reason_codes"] == [code]
        [candidate] = record["candidates"]
        assert candidate["action_id"] == raised[alert_id].action_id
        assert code in [r["reason_code"] for r in candidate["rules"] if isinstance(r, dict)]
    assert withdrawn[queued]["withdrawal"]["moment"] == "open"
    assert withdrawn[opened]["withdrawal"]["moment"] == "list"

    # A disposition is refused with the reason; the unchanged customer's is recorded.
    body = {"outcome": "contacted"}
    refused = client.post(f"/v1/alerts/{opened}/disposition", json=body, headers=rm)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "conflict"
    assert "withdrawn" in error["message"] and error["details"]["withdrawal"] == notice
    assert code not in refused.text  # the RM is not told the rule's reason code
    path = f"/v1/alerts/alert-mortgage_consultation-{UNCHANGED}/disposition"
    assert client.post(path, json=body, headers=rm).status_code == 200

    verified = client.get("/v1/audit/verify", headers=compliance).json()
    assert verified["ok"] is True and verified["records"] == 2


def test_a_disposition_withdraws_the_alert_it_finds_no_longer_allowed(api) -> None:
    """The change comes between two looks at the inbox: the disposition itself asks the gate."""
    container, client = api
    _raised(container)
    opened = f"alert-mortgage_consultation-{CHANGED}"
    _withdraw_consent(container, client)
    path = f"/v1/alerts/{opened}/disposition"
    rm = key_headers(container, "rm")
    refused = client.post(path, json={"outcome": "converted"}, headers=rm)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"] == {
        "status": "withdrawn",
        "withdrawal": "consent_withdrawn",
    }
    stored = container.alert_store.get(opened)
    assert stored is not None and stored.withdrawal is not None
    assert (stored.status, stored.disposition, stored.withdrawal.moment) == (
        "withdrawn",
        None,
        "dispose",
    )
    # Nothing went to contact history: no contact was made.
    assert container.contacts.recent(CHANGED, None, datetime.now(UTC), 30) == ()


def test_alerts_are_held_back_while_consent_cannot_be_read_and_return_after(api) -> None:
    """Consent that cannot be read is a no for now: the alerts are not shown or opened, and a
    disposition gets 503 consent_unavailable; nothing is withdrawn. The consent table is moved
    away on the real server (the alerts table still answers), then put back."""
    container, client = api
    raised = _raised(container)
    rm = key_headers(container, "rm")
    away = f"{consent_history.name}_away"
    with container.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {consent_history.name} RENAME TO {away}"))
    try:
        swept = container.alert_inbox.sweep()
        assert [a for a in swept if a.status == "open"] == []  # nothing opened unchecked
        inbox = client.get(INBOX, headers=rm)
        assert inbox.status_code == 200, inbox.text
        assert inbox.json() == {"alerts": [], "unchecked": 2}
        everything = client.get("/v1/alerts", headers=rm).json()
        assert everything == {"alerts": [], "unchecked": 4}
        path = f"/v1/alerts/alert-mortgage_consultation-{UNCHANGED}/disposition"
        refused = client.post(path, json={"outcome": "contacted"}, headers=rm)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "consent_unavailable"
    finally:
        with container.engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {away} RENAME TO {consent_history.name}"))
    for alert_id, alert in raised.items():  # held back, not changed
        stored = container.alert_store.get(alert_id)
        assert stored is not None and stored.status == alert.status

    back = client.get(INBOX, headers=rm).json()
    assert back["unchecked"] == 0
    assert sorted(a["alert_id"] for a in back["alerts"]) == sorted(raised)  # the sweep opened
    path = f"/v1/alerts/alert-mortgage_consultation-{UNCHANGED}/disposition"
    assert client.post(path, json={"outcome": "contacted"}, headers=rm).status_code == 200


def test_an_erased_customer_s_alerts_are_gone(api) -> None:
    container, client = api
    _raised(container)
    erased = client.delete(f"/v1/customers/{CHANGED}", headers=key_headers(container, "compliance"))
    assert erased.status_code == 200, erased.text
    listed = client.get("/v1/alerts", headers=key_headers(container, "rm")).json()["alerts"]
    assert {a["customer_id"] for a in listed} == {UNCHANGED}
    path = f"/v1/alerts/alert-mortgage_consultation-{CHANGED}/disposition"
    gone = client.post(path, json={"outcome": "contacted"}, headers=key_headers(container, "rm"))
    assert gone.status_code == 404
