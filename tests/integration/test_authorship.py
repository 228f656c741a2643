"""Who wrote a consent change or a feedback is kept, and who may write which consent (the rules
of ``service/usecases/consent_writes.py``, each with a positive and a negative test); feedback
times are strict and bounded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from consent.stores.customers import KnownCustomer
from consent.stores.tables import contact_history
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.auth import Role
from tests.conftest import key_headers
from tests.doubles import GOOD_STANDING

MINE, THEIRS = "C0000042", "C0000043"  # RM0001's (the development RM key's), RM0002's


@pytest.fixture
def api(embedded: Container) -> Iterator[tuple[Container, TestClient]]:
    embedded.directory.upsert(
        [
            KnownCustomer(MINE, None, "RM0001", GOOD_STANDING),
            KnownCustomer(THEIRS, None, "RM0002", GOOD_STANDING),
        ]
    )
    with TestClient(create_app(embedded)) as client:
        yield embedded, client


def put(client, container, role: Role, customer: str, granted: bool, **extra: object):
    choice = {"purpose": "marketing", "channel": "rm", "granted": granted}
    body = {"consents": [{**choice, "source": "branch_form", "notice_version": "v1", **extra}]}
    return client.put(
        f"/v1/customers/{customer}/consents", json=body, headers=key_headers(container, role)
    )


def test_each_consent_entry_keeps_the_key_that_recorded_it(api) -> None:
    container, client = api
    assert put(client, container, "channel", MINE, True).status_code == 200
    assert put(client, container, "rm", MINE, False).status_code == 200
    shown = client.get(
        f"/v1/customers/{MINE}/consents",
        params={"history": "true"},
        headers=key_headers(container, "compliance"),
    ).json()
    assert [(e["granted"], e["recorded_by"]) for e in shown["history"]] == [
        (True, "channel:dev-channel"),
        (False, "rm:dev-rm"),
    ]
    assert shown["consents"][0]["recorded_by"] == "rm:dev-rm"
    assert [e.recorded_by for e in container.registry.history(MINE)] == [
        "channel:dev-channel",
        "rm:dev-rm",
    ]


def test_a_client_cannot_name_who_recorded_a_consent(api) -> None:
    container, client = api
    forged = put(client, container, "channel", MINE, True, recorded_by="compliance:someone")
    assert forged.status_code == 422 and forged.json()["error"]["code"] == "invalid_request"
    assert container.registry.history(MINE) == []


def test_an_rm_may_grant_for_their_own_customer(api) -> None:
    container, client = api
    assert put(client, container, "rm", MINE, True).status_code == 200
    assert container.registry.current(MINE)[("marketing", "rm")].granted


@pytest.mark.parametrize("customer", [THEIRS, "C0000099"], ids=["another RM's", "unknown"])
def test_an_rm_may_not_grant_for_anyone_else(api, customer: str) -> None:
    container, client = api
    refused = put(client, container, "rm", customer, True)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "own customers" in refused.json()["error"]["message"]
    assert container.registry.history(customer) == []


def test_a_withdrawal_is_taken_from_any_recording_key_for_anyone(api) -> None:
    container, client = api
    assert put(client, container, "channel", THEIRS, True).status_code == 200
    withdrawn = put(client, container, "rm", THEIRS, False)  # not this RM's customer
    assert withdrawn.status_code == 200, withdrawn.text
    assert container.registry.current(THEIRS)[("marketing", "rm")].granted is False


@pytest.mark.parametrize("role", ["compliance", "admin"])
def test_roles_that_do_not_record_consent_cannot_even_withdraw(api, role: Role) -> None:
    container, client = api
    refused = put(client, container, role, MINE, False)
    assert refused.status_code == 403
    assert container.registry.history(MINE) == []


def test_a_channel_key_may_grant_for_any_customer(api) -> None:
    container, client = api
    for customer in (MINE, THEIRS):
        assert put(client, container, "channel", customer, True).status_code == 200


FEEDBACK = {
    "customer_id": MINE,
    "action_id": "mortgage_consultation",
    "channel": "mobile_app",
    "kind": "decline",
}


def test_feedback_keeps_its_author_and_its_time_in_utc(api) -> None:
    container, client = api
    at = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    written = at.astimezone(timezone(timedelta(hours=14))).isoformat()  # +14:00
    body = {**FEEDBACK, "occurred_at": written}
    response = client.post("/v1/feedback", json=body, headers=key_headers(container, "rm"))
    assert response.status_code == 202, response.text
    with container.engine.connect() as connection:
        row = connection.execute(select(contact_history)).one()
    assert row.recorded_by == "rm:dev-rm"
    assert row.occurred_at == at and row.occurred_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("occurred_at", "reason"),
    [
        (0, "RFC 3339"),  # was stored as 1970-01-01
        ("1700000000", "RFC 3339"),  # was stored as 2023
        ("2026-11-29T08:00:00", "RFC 3339"),
        ("2099-01-01T00:00:00Z", "in the future"),
        ("1970-01-01T00:00:00Z", "in the past"),
    ],
)
def test_feedback_times_are_strict_and_bounded(api, occurred_at: object, reason: str) -> None:
    container, client = api
    body = {**FEEDBACK, "occurred_at": occurred_at}
    response = client.post("/v1/feedback", json=body, headers=key_headers(container, "channel"))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert reason in str(response.json()["error"])
    assert container.contacts.recent(MINE, None, datetime.now(UTC), 365 * 200) == ()
