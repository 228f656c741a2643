"""The edges of the API: per-key rate limits (429), bounded request bodies (413), one error shape
whatever failed (our errors, the framework's, a bug), the Server-Timing header on every response,
and the Prometheus metrics an operator scrapes."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from consent.rules.vocabulary import NEEDS
from consent.stores.customers import KnownCustomer
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.limits import RateLimiter
from service.usecases.ports import FixedModels
from tests.conftest import key_headers, make_settings
from tests.doubles import (
    GOOD_STANDING,
    Clock,
    ConfidentModel,
    EveryoneEngaged,
    decision_service,
    grant_all,
)

CUSTOMER = "C0000042"
CONSENTS = f"/v1/customers/{CUSTOMER}/consents"
SERVER_TIMING = re.compile(r"^app;dur=\d+\.\d{3}$")
LIMIT_BYTES = 1024
EVENT = {
    "event_id": "limits-1",
    "customer_id": CUSTOMER,
    "type": "login",
    "occurred_at": "2026-11-29T08:00:00Z",
    "channel": "mobile_app",
}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(tmp_path: Path, clock: Clock) -> Iterator[tuple[Container, TestClient]]:
    """An app allowing each key 3 requests at once, refilled at 1 per second, and bodies of
    at most 1 KiB; server errors come back as responses, as a client would see them."""
    container = Container(
        make_settings(
            tmp_path / "home",
            rate_limit_per_second="1",
            rate_limit_burst="3",
            max_request_bytes=str(LIMIT_BYTES),
            model_refresh_seconds="0",
        )
    )
    app = create_app(container, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield container, client
    container.close()


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# --- rate limits ---


def test_a_key_gets_its_burst_then_429_until_the_bucket_refills(limited, clock) -> None:
    container, client = limited
    compliance = key_headers(container, "compliance")
    for _ in range(3):
        assert client.get(CONSENTS, headers=compliance).status_code == 200
    refused = client.get(CONSENTS, headers=compliance)
    _error(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "1"
    # Buckets are per key: another key is not held back by this one.
    assert client.get(CONSENTS, headers=key_headers(container, "rm")).status_code == 200

    clock.now += 1.0  # one token back
    assert client.get(CONSENTS, headers=compliance).status_code == 200
    _error(client.get(CONSENTS, headers=compliance), 429, "rate_limited")
    clock.now += 60.0  # a quiet minute refills the burst, and no more
    assert [client.get(CONSENTS, headers=compliance).status_code for _ in range(4)] == [
        200,
        200,
        200,
        429,
    ]


def test_calls_without_a_valid_key_spend_nothing_and_forbidden_ones_count(limited) -> None:
    container, client = limited
    for _ in range(5):
        _error(client.get(CONSENTS, headers={"X-API-Key": "x" * 40}), 401, "unauthenticated")
    compliance = key_headers(container, "compliance")
    assert [client.get(CONSENTS, headers=compliance).status_code for _ in range(3)] == [200] * 3
    # A key that keeps knocking on a door it may not open is still using the service.
    channel = key_headers(container, "channel")
    for _ in range(3):
        _error(client.get("/v1/audit/verify", headers=channel), 403, "forbidden")
    _error(client.get(CONSENTS, headers=channel), 429, "rate_limited")


def test_health_readiness_and_metrics_are_open_and_never_limited(limited) -> None:
    _, client = limited
    for path in ("/healthz", "/readyz", "/metrics"):
        assert [client.get(path).status_code for _ in range(5)] == [200] * 5, path


def test_the_bucket_refills_at_its_rate_and_never_beyond_its_burst(clock) -> None:
    limiter = RateLimiter(rate=2.0, burst=4, clock=clock)
    assert [limiter.take("k") for _ in range(4)] == [0.0] * 4
    assert limiter.take("k") == pytest.approx(0.5)  # half a second to the next token
    clock.now += 0.25
    assert limiter.take("k") == pytest.approx(0.25)  # a refused call takes nothing
    clock.now += 0.25
    assert limiter.take("k") == 0.0
    clock.now += 3_600
    assert [limiter.take("k") == 0.0 for _ in range(5)] == [True] * 4 + [False]
    assert limiter.take("other") == 0.0


def test_concurrent_callers_never_get_more_than_the_burst() -> None:
    # The clock stands still, so exactly `burst` tokens exist however the threads interleave.
    limiter = RateLimiter(rate=1.0, burst=1_000, clock=lambda: 0.0)
    granted = [0] * 8
    start = threading.Barrier(len(granted))

    def hammer(slot: int) -> None:
        start.wait()
        granted[slot] = sum(limiter.take("shared") == 0.0 for _ in range(500))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(granted))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 1_000


# --- request sizes ---


def test_a_declared_body_over_the_limit_is_refused_unread_even_without_a_key(limited) -> None:
    container, client = limited
    big = {"events": [{**EVENT, "event_id": f"limits-{i}"} for i in range(20)]}
    for headers in ({}, key_headers(container, "channel")):
        _error(client.post("/v1/events", json=big, headers=headers), 413, "request_too_large")
    small = client.post(
        "/v1/events", json={"events": [EVENT]}, headers=key_headers(container, "channel")
    )
    assert small.status_code == 202, small.text


def test_a_body_without_a_length_is_counted_and_refused_at_the_first_chunk_past_the_limit(
    limited,
) -> None:
    container, client = limited
    key = key_headers(container, "channel")["X-API-Key"].encode()
    chunks_read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b" " * 512, "more_body": chunks_read < 1_000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"x-api-key", key)],
        "client": ("127.0.0.1", 50_000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413
    # 512 and 1,024 bytes are within the limit, 1,536 is not: the rest is never read.
    assert chunks_read == 3
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert b'"code":"request_too_large"' in body


def test_a_streamed_body_over_the_limit_gets_413_through_a_client(limited) -> None:
    container, client = limited

    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    response = client.post(
        "/v1/events",
        content=chunks(),
        headers={**key_headers(container, "channel"), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    _error(response, 413, "request_too_large")


def test_a_streamed_decision_body_over_the_limit_gets_413(limited) -> None:
    """The decision route reads its body itself (``service.entrypoints.api.direct``): the limit
    holds."""
    container, client = limited
    response = client.post(
        "/v1/decisions",
        content=iter([b" " * 512] * 8),
        headers={**key_headers(container, "channel"), "Content-Type": "application/json"},
    )
    _error(response, 413, "request_too_large")


def test_the_decision_route_says_what_is_wrong_with_its_body(limited, clock: Clock) -> None:
    """Its own body handling answers like FastAPI's elsewhere: where, and what."""
    container, client = limited
    headers = key_headers(container, "channel")

    def post(**kwargs: Any) -> Any:
        clock.now += 1.0  # a request a second: within the key's rate
        return client.post("/v1/decisions", **kwargs)

    cases = [
        ({"channel": "mobile_app"}, "body.customer_id"),
        ({"customer_id": "C0000042", "channel": "pigeon"}, "body.channel"),
        ({"customer_id": "C0000042", "channel": "web", "limit": 0}, "body.limit"),
        ({"customer_id": "C0000042", "channel": "web", "extra": 1}, "body.extra"),
        (
            {"customer_id": "C0000042", "channel": "web", "context": {"page": "x" * 65}},
            "body.context.page",
        ),
    ]
    for body, where in cases:
        error = _error(post(json=body, headers=headers), 422, "invalid_request")
        assert [d["where"] for d in error["details"]] == [where], body
    for content, content_type in [(b"{", "application/json"), (b"customer_id=C1", "text/plain")]:
        error = _error(
            client.post(
                "/v1/decisions", content=content, headers={**headers, "Content-Type": content_type}
            ),
            422,
            "invalid_request",
        )
        assert error["details"][0]["where"] == "body"
    # Who is asking is settled before the body is read: a bad body from nobody is a 401.
    _error(client.post("/v1/decisions", content=b"{"), 401, "unauthenticated")


# --- errors ---


def test_unknown_routes_wrong_methods_and_unreadable_bodies_answer_in_our_shape(limited) -> None:
    container, client = limited
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    wrong = client.delete("/healthz")
    _error(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET"
    unreadable = client.post(
        "/v1/decisions",
        content=b"\xff\xfe\x00",
        headers={**key_headers(container, "rm"), "Content-Type": "application/json"},
    )
    error = _error(unreadable, 400, "invalid_request")
    assert "parsing" not in error["message"]  # our words, not the framework's


def test_an_unexpected_failure_is_a_500_that_reveals_nothing(limited) -> None:
    _, client = limited

    def explode() -> None:
        raise RuntimeError("cannot reach postgresql://nextbest:hunter2@db:5432")

    # A route that fails like a bug would; added before the first request builds the stack.
    client.app.add_api_route("/v1/explode", explode)
    response = client.get("/v1/explode")
    error = _error(response, 500, "internal_error")
    assert error == {"code": "internal_error", "message": "internal error"}
    assert "hunter2" not in response.text and "postgresql" not in response.text
    assert SERVER_TIMING.match(response.headers["Server-Timing"])


def test_every_response_carries_server_timing_in_milliseconds(limited) -> None:
    container, client = limited
    compliance = key_headers(container, "compliance")
    responses = [
        client.get("/healthz"),
        client.get("/metrics"),
        client.get(CONSENTS, headers=compliance),
        client.get(CONSENTS),  # 401
        client.get("/v1/audit/verify", headers=key_headers(container, "channel")),  # 403
        client.get("/nowhere"),  # 404
        client.put("/healthz"),  # 405
        client.post("/v1/decisions", json={"channel": "fax"}, headers=compliance),  # 422
        client.post("/v1/events", content=b"x" * (LIMIT_BYTES + 1)),  # 413
    ]
    responses += [client.get(CONSENTS, headers=compliance) for _ in range(3)]  # ... 429
    assert {r.status_code for r in responses} >= {200, 401, 403, 404, 405, 413, 422, 429}
    for response in responses:
        assert SERVER_TIMING.match(response.headers["Server-Timing"]), response.headers


# --- metrics ---


#: Each metric sample's value by name and labels.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def deciding(tmp_path: Path) -> Iterator[tuple[Container, TestClient]]:
    """The real gate, stores and audit log, with a model for every need that scores high and
    features a minute old for everyone (tests/doubles.py): decisions deliver and suppress."""
    container = Container(make_settings(tmp_path / "home", model_refresh_seconds="0"))
    # Fixed models in the registry's place: a ModelSet's other methods are not used here.
    container.models = FixedModels({need: ConfidentModel(need) for need in NEEDS})  # type: ignore[assignment]
    container.decisions = decision_service(container.engine, EveryoneEngaged())
    container.directory.upsert([KnownCustomer(CUSTOMER, "H42", "RM0001", GOOD_STANDING)])
    grant_all(container.registry, CUSTOMER, "mobile_app")
    with TestClient(create_app(container)) as client:
        yield container, client
    container.close()


def test_metrics_count_decisions_suppressions_feature_age_models_and_latency(deciding) -> None:
    container, client = deciding
    compliance = key_headers(container, "compliance")
    before = _samples(client)
    records = []
    container.directory.upsert([KnownCustomer("C0000007", "H7", "RM0001", GOOD_STANDING)])
    for customer in (CUSTOMER, "C0000007"):  # consenting; a customer who never consented
        decided = client.post(
            "/v1/decisions",
            json={"customer_id": customer, "channel": "mobile_app"},
            headers=compliance,
        )
        assert decided.status_code == 200, decided.text
        audit = client.get(
            f"/v1/audit/decisions/{decided.json()['decision_id']}", headers=compliance
        )
        records.append(audit.json()["record"])
    assert client.get(CONSENTS, headers=compliance).status_code == 200
    after = _samples(client)

    statuses = [r["delivery_status"] for r in records]
    assert statuses == ["delivered", "nothing_to_deliver"]
    for status in statuses:
        assert (
            _delta(
                before,
                after,
                "nextbest_decisions_total",
                channel="mobile_app",
                delivery_status=status,
            )
            == 1
        )
    # Each suppressed candidate's reason codes, exactly as the audit records hold them.
    expected: dict[str, int] = {}
    for record in records:
        for candidate in record["candidates"]:
            if candidate["delivered"]:
                continue
            for rule in candidate["rules"]:
                if isinstance(rule, dict):
                    expected[rule["reason_code"]] = expected.get(rule["reason_code"], 0) + 1
    assert "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL" in expected
    for code, count in expected.items():
        assert _delta(before, after, "nextbest_suppressions_total", reason_code=code) == count
    # Once per group of features read together (a view's row), with the age the record holds.
    ages = [
        g["age_seconds"] for r in records for g in r["features"] if g["age_seconds"] is not None
    ]
    assert ages and not records[1]["features"]  # no consent, nothing read
    assert _delta(before, after, "nextbest_decision_feature_age_seconds_count") == len(ages)
    assert _delta(before, after, "nextbest_decision_feature_age_seconds_sum") == pytest.approx(
        sum(ages)
    )
    for need in NEEDS:
        key = (
            "nextbest_model_info",
            frozenset({"need": need, "name": "fixed", "version": "1"}.items()),
        )
        assert after[key] == 1
    # Latency by route template: the customer id never becomes a label.
    templated = {"method": "GET", "route": "/v1/customers/{customer_id}/consents", "status": "200"}
    assert _delta(before, after, "nextbest_http_request_seconds_count", **templated) == 1
    assert not any(CUSTOMER in value for _, labels in after for _, value in labels)
