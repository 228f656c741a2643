"""Who may call what (every endpoint, every role, no key, a wrong key), and the right to erasure
through the API: afterwards the chain verifies and nothing ties the audit log to the person."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from consent.stores.customers import KnownCustomer
from consent.stores.tables import audit_log
from feature_repo.activity import FEATURE_NAMES
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.auth import ROLES
from tests.conftest import key_headers
from tests.doubles import GOOD_STANDING, grant_all, sample_alert

CUSTOMER = "C0000042"
CONSENT = {
    "consents": [
        {
            "purpose": "marketing",
            "channel": "email",
            "granted": True,
            "source": "t",
            "notice_version": "v1",
        }
    ]
}
FEEDBACK = {
    "customer_id": CUSTOMER,
    "action_id": "mortgage_consultation",
    "channel": "mobile_app",
    "kind": "decline",
}
EVENT = {
    "event_id": "roles-1",
    "customer_id": CUSTOMER,
    "type": "login",
    "occurred_at": "2026-11-29T08:00:00Z",
    "channel": "mobile_app",
}
#: (method, path, body, roles allowed)
ENDPOINTS = [
    (
        "POST",
        "/v1/decisions",
        {"customer_id": CUSTOMER, "channel": "mobile_app"},
        {"channel", "rm", "compliance"},
    ),
    ("GET", "/v1/audit/verify", None, {"compliance"}),
    ("GET", "/v1/audit/decisions/none", None, {"compliance"}),
    ("GET", "/v1/audit/decisions/none/proof", None, {"compliance"}),
    ("GET", "/v1/audit/consistency?from=1&to=2", None, {"compliance"}),
    ("GET", f"/v1/customers/{CUSTOMER}/consents", None, {"channel", "rm", "compliance"}),
    ("PUT", f"/v1/customers/{CUSTOMER}/consents", CONSENT, {"channel", "rm"}),
    ("POST", "/v1/feedback", FEEDBACK, {"channel", "rm"}),
    ("POST", "/v1/events", {"events": [EVENT]}, {"channel", "admin"}),
    ("DELETE", "/v1/customers/C0000099", None, {"compliance"}),
    ("GET", "/v1/alerts", None, {"rm", "compliance", "admin"}),
    ("POST", "/v1/alerts/none/disposition", {"outcome": "contacted"}, {"rm", "admin"}),
]
#: For the operator's probes and scraper: no key (and so no rate limit).
OPEN = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/rm"),  # the RM inbox page and its files: it signs in with a key itself
    ("GET", "/rm/inbox.js"),
    ("GET", "/rm/inbox.css"),
]


@pytest.fixture
def api(embedded: Container) -> Iterator[tuple[Container, TestClient]]:
    embedded.directory.upsert([KnownCustomer(CUSTOMER, "H42", "RM0001", GOOD_STANDING)])
    with TestClient(create_app(embedded)) as client:
        yield embedded, client


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), ENDPOINTS, ids=lambda v: str(v)[:40]
)
def test_every_role_is_let_through_or_refused_as_documented(
    api, method, path, body, allowed
) -> None:
    container, client = api
    for role in ROLES:
        response = client.request(method, path, json=body, headers=key_headers(container, role))
        if role in allowed:
            assert response.status_code not in (401, 403), (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    for headers in ({}, {"X-API-Key": "not-a-key-" + "x" * 30}, {"Authorization": "Bearer wrong"}):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthenticated"


def test_the_table_names_every_operation_of_the_api(api) -> None:
    _, client = api
    operations = {
        (method, route.path)
        for route in client.app.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    listed = {
        (method, route.path)
        for method, path in [(m, p) for m, p, *_ in ENDPOINTS] + OPEN
        for route in client.app.routes
        if isinstance(route, APIRoute)
        and method in (route.methods or ())
        and route.path_regex.match(path)
    }
    assert operations == listed


@pytest.mark.parametrize(("method", "path"), OPEN)
def test_probes_and_metrics_need_no_key(api, method, path) -> None:
    _, client = api
    assert client.request(method, path).status_code == 200


def test_a_bearer_token_works_like_the_header(api) -> None:
    container, client = api
    key = key_headers(container, "compliance")["X-API-Key"]
    response = client.get("/v1/audit/verify", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.json()["ok"] is True


def test_only_compliance_sees_why_actions_were_suppressed(api) -> None:
    container, client = api
    body = {"customer_id": CUSTOMER, "channel": "mobile_app"}
    for role in ("channel", "rm"):
        seen = client.post("/v1/decisions", json=body, headers=key_headers(container, role))
        assert seen.status_code == 200 and seen.json()["suppressed"] is None
    seen = client.post("/v1/decisions", json=body, headers=key_headers(container, "compliance"))
    reasons = {code for s in seen.json()["suppressed"] for code in s["reason_codes"]}
    assert "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL" in reasons  # nothing granted yet


def test_a_future_consent_time_is_refused(api) -> None:
    container, client = api
    body = {"consents": [{**CONSENT["consents"][0], "given_at": "2099-01-01T00:00:00Z"}]}
    response = client.put(
        f"/v1/customers/{CUSTOMER}/consents", json=body, headers=key_headers(container, "channel")
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_a_decline_through_feedback_stops_the_offer_for_its_cool_off(api) -> None:
    container, client = api
    grant_all(container.registry, CUSTOMER, "mobile_app")
    compliance = key_headers(container, "compliance")
    response = client.post("/v1/feedback", json=FEEDBACK, headers=key_headers(container, "channel"))
    assert response.status_code == 202, response.text
    decision = client.post(
        "/v1/decisions", json={"customer_id": CUSTOMER, "channel": "mobile_app"}, headers=compliance
    ).json()
    mortgage = next(s for s in decision["suppressed"] if s["action_id"] == "mortgage_consultation")
    assert "DECLINED_RECENTLY" in mortgage["reason_codes"]
    (contact,) = container.contacts.recent(CUSTOMER, "H42", datetime.now(UTC), 1)
    assert (contact.kind, contact.action_id, contact.need) == (
        "decline",
        "mortgage_consultation",
        "mortgage",
    )


def test_erasure_forgets_the_customer_and_the_chain_still_verifies(api) -> None:
    container, client = api
    compliance = key_headers(container, "compliance")
    grant_all(container.registry, CUSTOMER, "mobile_app")
    container.features.online.write(
        [CUSTOMER],
        np.array([int(datetime.now(UTC).timestamp() * 1e6)]),
        np.ones((1, len(FEATURE_NAMES))),
    )
    assert container.features.read(CUSTOMER).known
    client.post("/v1/feedback", json=FEEDBACK, headers=key_headers(container, "rm"))
    for _ in range(3):
        decided = client.post(
            "/v1/decisions",
            json={"customer_id": CUSTOMER, "channel": "mobile_app"},
            headers=compliance,
        )
        assert decided.status_code == 200
    other = client.post(
        "/v1/decisions", json={"customer_id": "C0000007", "channel": "web"}, headers=compliance
    )
    assert other.status_code == 200
    assert len(list(container.audit.export(CUSTOMER))) == 3

    erased = client.delete(f"/v1/customers/{CUSTOMER}", headers=compliance)
    assert erased.status_code == 200, erased.text
    assert erased.json()["audit_key"] is True and erased.json()["consent_entries"] == 3

    verified = client.get("/v1/audit/verify", headers=compliance).json()
    assert verified["ok"] is True and verified["records"] == 5  # 4 decisions and the erasure
    assert list(container.audit.export(CUSTOMER)) == []  # no longer findable
    with container.engine.connect() as connection:
        rows = connection.execute(audit_log.select()).all()
    assert rows and not any(CUSTOMER in str(tuple(row)) for row in rows)  # nothing reveals the id
    assert container.registry.current(CUSTOMER) == {}
    assert container.directory.get(CUSTOMER) is None
    assert container.contacts.recent(CUSTOMER, "H42", datetime.now(UTC), 30) == ()
    assert not container.features.read(CUSTOMER).known
    # A customer who comes back starts afresh, under a new pseudonym.
    again = client.post(
        "/v1/decisions", json={"customer_id": CUSTOMER, "channel": "mobile_app"}, headers=compliance
    )
    assert again.status_code == 200
    (entry,) = container.audit.export(CUSTOMER)
    assert entry["record"]["customer_ref"] not in {r.customer_ref for r in rows}


def test_an_rm_sees_and_works_only_their_own_alerts(api) -> None:
    container, client = api
    grant_all(container.registry, CUSTOMER, "rm")  # alerts pass the gate again when listed
    container.alert_store.add(
        [sample_alert(CUSTOMER, r, f"alert-{r}") for r in ("RM0001", "RM0002")],
        20,
        datetime.now(UTC),
    )
    rm = key_headers(container, "rm")  # the development RM key is RM0001's
    mine = client.get("/v1/alerts", headers=rm).json()["alerts"]
    assert [a["alert_id"] for a in mine] == ["alert-RM0001"]
    assert mine[0]["talking_points"][0] == "Mortgage interest 0.71"
    refused = client.get("/v1/alerts", params={"rm_id": "RM0002"}, headers=rm)
    assert refused.status_code == 403
    compliance = key_headers(container, "compliance")
    everyone = client.get("/v1/alerts", params={"status": "open"}, headers=compliance).json()
    assert {a["rm_id"] for a in everyone["alerts"]} == {"RM0001", "RM0002"}

    body = {"outcome": "contacted", "note": "call back Friday"}
    other = client.post("/v1/alerts/alert-RM0002/disposition", json=body, headers=rm)
    assert other.status_code == 403
    done = client.post("/v1/alerts/alert-RM0001/disposition", json=body, headers=rm)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["disposition"]) == ("closed", "contacted")
    again = client.post("/v1/alerts/alert-RM0001/disposition", json=body, headers=rm)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    path = "/v1/alerts/alert-RM0002/disposition"
    wrong = client.post(path, json={"outcome": "maybe"}, headers=rm)
    assert wrong.status_code == 422
