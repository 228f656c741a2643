"""``POST /v1/events``: every record carries the key that sent it; consent events come only
from the role meant for them; 202 only for events the transport acknowledged (here the local
event log; Kafka refusing and down: tests/hostile/test_sends_fail.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from service.adapters.transport import EVENTS_TOPIC, Record
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.auth import ROLES
from service.usecases.event_intake import CONSENT_EVENT_ROLES
from tests.conftest import key_headers

AT = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
LOGIN = {
    "event_id": "api-login-1",
    "customer_id": "C0000042",
    "type": "login",
    "occurred_at": AT,
    "channel": "mobile_app",
}
CONSENT = {
    "event_id": "api-consent-1",
    "customer_id": "C0000042",
    "type": "consent_changed",
    "occurred_at": AT,
    "channel": "mobile_app",
    "payload": {
        "purpose": "marketing",
        "channel": "email",
        "granted": True,
        "source": "app_settings",
        "notice_version": "2026-10",
    },
}


@pytest.fixture
def api(embedded: Container) -> Iterator[tuple[Container, TestClient]]:
    with TestClient(create_app(embedded)) as client:
        yield embedded, client


def _written(container: Container) -> list[Record]:
    return container.consumer(EVENTS_TOPIC).poll(100, 0)


def test_each_record_carries_the_principal_that_sent_it(api) -> None:
    container, client = api
    answer = client.post(
        "/v1/events", json={"events": [LOGIN]}, headers=key_headers(container, "admin")
    )
    assert answer.status_code == 202, answer.text
    (record,) = _written(container)
    headers = dict(record.headers)
    assert json.loads(headers["nextbest-principal"]) == {"name": "dev-admin", "role": "admin"}


@pytest.mark.parametrize("role", ROLES)
def test_consent_events_are_accepted_only_from_the_channel_role(api, role) -> None:
    container, client = api
    answer = client.post(
        "/v1/events", json={"events": [LOGIN, CONSENT]}, headers=key_headers(container, role)
    )
    if role in CONSENT_EVENT_ROLES:
        assert answer.status_code == 202, answer.text
        assert len(_written(container)) == 2
    else:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
        assert _written(container) == []  # all or nothing: not the login either
    assert CONSENT_EVENT_ROLES == ("channel",)


def test_an_event_log_that_cannot_be_written_gives_503_never_202(api) -> None:
    container, client = api
    container.local_log.path(container.settings.topic(EVENTS_TOPIC)).mkdir(parents=True)
    answer = client.post(
        "/v1/events", json={"events": [LOGIN]}, headers=key_headers(container, "channel")
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "transport_unavailable"


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2099-01-01T00:00:00Z",  # a device clock decades ahead
        (datetime.now(UTC) + timedelta(hours=2)).isoformat(),  # beyond the skew allowed
        "1970-01-01T00:00:00Z",  # beyond the horizon of history
    ],
)
def test_an_event_dated_outside_the_time_bounds_is_refused_with_422(api, occurred_at) -> None:
    container, client = api
    bad = {**LOGIN, "event_id": "api-login-bad-time", "occurred_at": occurred_at}
    response = client.post(
        "/v1/events", json={"events": [LOGIN, bad]}, headers=key_headers(container, "channel")
    )
    assert response.status_code == 422, response.text
    (problem,) = response.json()["error"]["details"]
    assert problem["index"] == 1 and problem["problem"].startswith("occurred_at: time ")
    assert _written(container) == []  # all or nothing: the good one was not sent either
