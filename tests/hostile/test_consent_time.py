"""Scenario 1 (issue 17): consent under dirty time, on SQLite and on the real PostgreSQL.

A grant dated far in the future, or by a device whose clock runs ahead, must lose to a
withdrawal recorded after it, whichever way each arrives (the stream, the API). The history is
ordered by when the bank recorded each entry; the customer's (device's) time is kept as
evidence only. A Hypothesis property draws grants and withdrawals with random UTC offsets
(+-14 h) and skewed device clocks, through both paths, with redeliveries: both backends agree
with a simple model (the last recorded entry wins), and the real gate delivers no marketing
action without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from consent.rules.catalog import Catalog
from consent.rules.model import ConsentGiven, CustomerFacts
from consent.rules.policy import Policy
from consent.rules.subject import Subject
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory, KnownCustomer
from consent.stores.reads import GateReads, gate_reads
from consent.stores.registry import ConsentRegistry
from consent.stores.store import connect
from feature_repo.events import TimeBounds, parse_event
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.auth import Principal
from service.errors import InvalidRequest
from service.usecases import pipeline
from service.usecases.consent_writes import RecordConsentChoice, consent_entries, stream_entries
from tests.conftest import key_headers, make_settings

CUSTOMER = "C0000017"
#: An operational store as the property drives it: its engine, registry and gate reads.
Backend = tuple[Engine, ConsentRegistry, GateReads]
CATALOG = Catalog.load()
POLICY = Policy.load()
MORTGAGE = CATALOG.actions["mortgage_consultation"]
SKEW = timedelta(minutes=5)  # the default NEXTBEST_MAX_CLOCK_SKEW_SECONDS
CHANNEL_KEY = Principal("hostile-app", "channel")


def rfc3339(moment: datetime, offset_minutes: int = 0) -> str:
    """``moment`` written in the zone ``offset_minutes`` east of UTC, as a device would."""
    return moment.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()


def gate(consents: dict[tuple[str, str], ConsentGiven], channel: str = "email") -> set[str]:
    """The real gate's suppressions for a mortgage offer to a customer in good standing (an
    empty set: delivered). The gate's own clock is midday UTC, outside quiet hours."""
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    facts = CustomerFacts(
        age=40,
        income=90_000,
        timezone="UTC",
        kyc_status="complete",
        debt_to_income=0.1,
        risk_level=5,
        risk_assessed_at=noon - timedelta(days=30),
    )
    subject = Subject(
        action=MORTGAGE,
        channel=channel,
        score=0.9,
        consents=consents,
        now=noon,
        facts=facts,
        customer_id=CUSTOMER,  # in no control group (tests/unit/test_control_groups.py)
    )
    return {o.reason_code for o in POLICY.evaluate(subject) if not o.passed and o.reason_code}


@contextmanager
def operational_url(backend: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """An operational store of its own: a SQLite file, or a fresh schema on the real server."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'ops-{uuid.uuid4().hex[:6]}.db'}"
        return
    assert postgres_url is not None
    schema = f"t{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"create schema {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def bank(request, tmp_path: Path) -> Iterator[tuple[Container, TestClient]]:
    """The API and the stream worker (embedded event log) on either operational store."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with operational_url(request.param, tmp_path, url) as database_url:
        overrides = {"database_url": database_url} if request.param == "postgres" else {}
        container = Container(make_settings(tmp_path / "home", **overrides))
        container.directory.upsert([KnownCustomer(CUSTOMER, None, "RM0001", CustomerFacts())])
        try:
            with TestClient(create_app(container)) as client:
                yield container, client
        finally:
            container.close()


def put(
    client: TestClient, container: Container, granted: bool, **fields: object
) -> dict[str, Any]:
    consent = {"purpose": "marketing", "channel": "email", "granted": granted}
    body = {"consents": [{**consent, "source": "app", "notice_version": "v1", **fields}]}
    response = client.put(
        f"/v1/customers/{CUSTOMER}/consents", json=body, headers=key_headers(container, "channel")
    )
    return {"status": response.status_code, **response.json()}


def consent_event(event_id: str, granted: bool, occurred_at: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": CUSTOMER,
        "type": "consent_changed",
        "occurred_at": occurred_at,
        "channel": "mobile_app",
        "payload": {
            "purpose": "marketing",
            "channel": "email",
            "granted": granted,
            "source": "app_settings",
            "notice_version": "v1",
        },
    }


def current_marketing(container: Container) -> ConsentGiven | None:
    read = container.gate_reads.read(CUSTOMER, datetime.now(UTC), 1)  # PostgreSQL: raw SQL
    via_registry = container.registry.current(CUSTOMER).get(("marketing", "email"))
    assert read.consents.get(("marketing", "email")) == via_registry
    return via_registry


DEVICE_AHEAD = {
    "2099": lambda now: "2099-01-01T00:00:00Z",
    "within the skew, +14:00": lambda now: rfc3339(now + SKEW - timedelta(seconds=30), 14 * 60),
    "beyond the skew, -12:00": lambda now: rfc3339(now + timedelta(hours=2), -12 * 60),
}


@pytest.mark.parametrize("device_time", list(DEVICE_AHEAD), ids=list(DEVICE_AHEAD))
def test_a_grant_from_the_stream_dated_ahead_loses_to_a_later_withdrawal(
    bank: tuple[Container, TestClient], device_time: str
) -> None:
    container, client = bank
    profiling = {"purpose": "profiling", "channel": None, "source": "app", "notice_version": "v1"}
    client.put(
        f"/v1/customers/{CUSTOMER}/consents",
        json={"consents": [{**profiling, "granted": True}]},
        headers=key_headers(container, "channel"),
    ).raise_for_status()
    claimed = DEVICE_AHEAD[device_time](datetime.now(UTC))
    grant = consent_event("grant-1", True, claimed)
    pipeline.publish_events(container, [grant])
    pipeline.stream_until_idle(container, idle_s=0.2)
    recorded = current_marketing(container)
    if recorded is not None:  # (the stream may dead-letter a time beyond its bounds instead)
        assert recorded.granted and gate({**_all(container)}) == set()  # the control
        assert recorded.given_at == datetime.fromisoformat(claimed)  # kept, as evidence
        assert recorded.recorded_at <= datetime.now(UTC)  # the bank's clock orders

    withdrawn = put(client, container, False)
    assert withdrawn["status"] == 200, withdrawn
    # The grant redelivered, or replayed from offset 0, is the same event: recorded once.
    pipeline.publish_events(container, [grant])
    pipeline.stream_until_idle(container, idle_s=0.2)

    current = current_marketing(container)
    assert current is not None and current.granted is False
    assert current.recorded_by == "channel:dev-channel"
    assert "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL" in gate(_all(container))
    history = container.registry.history(CUSTOMER)
    assert len([e for e in history if e.event_id == "grant-1"]) <= 1


def _all(container: Container) -> dict[tuple[str, str], ConsentGiven]:
    return container.gate_reads.read(CUSTOMER, datetime.now(UTC), 1).consents


@pytest.mark.parametrize(
    ("given_at", "reason"),
    [
        ("2099-01-01T00:00:00Z", "in the future"),
        ("1970-01-01T00:00:00Z", "in the past"),
        (0, "RFC 3339"),
        ("1700000000", "RFC 3339"),
        ("2026-11-29T08:00:00", "RFC 3339"),  # no offset: which zone is unknown
    ],
)
def test_the_api_refuses_a_consent_time_beyond_the_bounds_and_says_why(
    bank: tuple[Container, TestClient], given_at: object, reason: str
) -> None:
    container, client = bank
    refused = put(client, container, True, given_at=given_at)
    assert refused["status"] == 422 and refused["error"]["code"] == "invalid_request"
    assert reason in str(refused["error"])
    assert container.registry.history(CUSTOMER) == []


def test_an_api_grant_from_a_clock_ahead_loses_to_a_withdrawal_from_a_clock_behind(
    bank: tuple[Container, TestClient],
) -> None:
    container, client = bank
    now = datetime.now(UTC)
    ahead = rfc3339(now + SKEW - timedelta(seconds=30), 14 * 60)  # within the skew, +14:00
    granted = put(client, container, True, given_at=ahead)
    assert granted["status"] == 200, granted
    (shown,) = granted["consents"]
    # Stored and shown in UTC, the same instant the device gave.
    assert datetime.fromisoformat(shown["given_at"]) == datetime.fromisoformat(ahead)
    assert datetime.fromisoformat(shown["given_at"]).utcoffset() == timedelta(0)
    behind = rfc3339(now - timedelta(hours=3), -10 * 60)  # a device three hours behind
    withdrawn = put(client, container, False, given_at=behind)
    assert withdrawn["status"] == 200, withdrawn
    (current,) = withdrawn["consents"]
    assert current["granted"] is False and current["recorded_by"] == "channel:dev-channel"
    entry = current_marketing(container)
    assert entry is not None and entry.granted is False
    assert "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL" in gate(_all(container))


# --- the property ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    path: str  # "api", "stream" or "redeliver" (an earlier stream event, again)
    key: str  # purpose/channel
    granted: bool
    skew_seconds: int  # how far the device's clock is from the server's
    offset_minutes: int  # the zone the device writes its time in


#: The mortgage offer goes out by email and phone (not sms): one key each, and profiling.
KEYS = [("marketing", "email"), ("marketing", "phone"), ("profiling", "any")]
steps = st.builds(
    Step,
    path=st.sampled_from(["api", "api", "stream", "stream", "redeliver"]),
    key=st.sampled_from([f"{p}/{c}" for p, c in KEYS]),
    granted=st.booleans(),
    # Mostly within the bounds (an hour behind to the skew ahead), sometimes far beyond.
    skew_seconds=st.one_of(
        st.integers(-3600, int(SKEW.total_seconds())), st.integers(-400 * 86_400, 80 * 365 * 86_400)
    ),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
)


def test_both_backends_agree_with_the_last_recorded_entry_and_the_gate_follows(
    tmp_path: Path, postgres_url: str
) -> None:
    with (
        operational_url("sqlite", tmp_path, None) as lite_url,
        operational_url("postgres", tmp_path, postgres_url) as pg_url,
    ):
        backends: list[Backend] = []
        for url in (lite_url, pg_url):
            engine = connect(url)
            registry = ConsentRegistry(engine)
            backends.append(
                (
                    engine,
                    registry,
                    gate_reads(registry, CustomerDirectory(engine), ContactHistory(engine), url),
                )
            )
        try:
            _property(backends)
        finally:
            for engine, _, reads in backends:
                reads.close()
                engine.dispose()


def _property(backends: list[Backend]) -> None:
    bounds = TimeBounds(ahead=SKEW)

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(sequence=st.lists(steps, min_size=1, max_size=8))
    def check(sequence: list[Step]) -> None:
        customer = f"P{uuid.uuid4().hex[:12]}"
        model: dict[tuple[str, str], bool] = {}
        sent: list[dict[str, Any]] = []
        directory = CustomerDirectory(backends[0][0])
        for step in sequence:
            entries = _entries(step, customer, sent, model, directory, bounds)
            if entries is None:
                continue
            for _, registry, _ in backends:
                registry.record(entries)
        _assert_backends_agree_with(model, backends, customer)

    check()


def _entries(
    step: Step,
    customer: str,
    sent: list[dict[str, Any]],
    model: dict[tuple[str, str], bool],
    directory: CustomerDirectory,
    bounds: TimeBounds,
) -> list[ConsentGiven] | None:
    """The entries ``step`` records (None: nothing), keeping ``sent`` (the stream's events so
    far) and ``model`` (what the ledger must say) up to date."""
    purpose, channel = step.key.split("/")
    now = datetime.now(UTC)
    try:
        device = now + timedelta(seconds=step.skew_seconds)
    except OverflowError:
        return None
    if step.path == "redeliver":
        if not sent:
            return None
        event = sent[len(sent) // 2]  # an earlier event, delivered again: no change
        return stream_entries([(parse_event(event), None)], now)
    if step.path == "stream":
        event = {
            **consent_event(
                f"e{len(sent)}-{customer}", step.granted, rfc3339(device, step.offset_minutes)
            ),
            "customer_id": customer,
        }
        event["payload"] = {**event["payload"], "purpose": purpose, "channel": channel}
        sent.append(event)
        model[(purpose, channel)] = step.granted
        return stream_entries([(parse_event(event), None)], now)
    choice = RecordConsentChoice(
        purpose=purpose,  # type: ignore[arg-type]
        channel=None if channel == "any" else channel,
        granted=step.granted,
        source="app",
        notice_version="v1",
        given_at=datetime.fromisoformat(rfc3339(device, step.offset_minutes)),
    )
    try:
        entries = consent_entries(customer, [choice], CHANNEL_KEY, directory, bounds, now)
    except InvalidRequest:
        assert bounds.violation(device, now) is not None
        return None
    model[(purpose, channel)] = step.granted
    return entries


def _assert_backends_agree_with(
    model: dict[tuple[str, str], bool], backends: list[Backend], customer: str
) -> None:
    reads = []
    for _, registry, reader in backends:
        current = registry.current(customer)
        assert reader.read(customer, datetime.now(UTC), 1).consents == current
        assert {k: e.granted for k, e in current.items()} == model
        assert all(e.recorded_at.utcoffset() == timedelta(0) for e in current.values())
        assert all(
            e.given_at is not None and e.given_at.utcoffset() == timedelta(0)
            for e in current.values()
        )
        reads.append(current)
    lite, pg = reads
    assert {k: (e.granted, e.recorded_at, e.given_at) for k, e in lite.items()} == {
        k: (e.granted, e.recorded_at, e.given_at) for k, e in pg.items()
    }
    # The real gate, on what each backend reads back: a marketing offer is delivered
    # exactly when the model says marketing on that channel and profiling are granted.
    for channel in ("email", "phone"):
        allowed = model.get(("marketing", channel), False) and model.get(
            ("profiling", "any"), False
        )
        for current in reads:
            assert (gate(current, channel) == set()) == allowed
            if not model.get(("marketing", channel), False):
                assert "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL" in gate(current, channel)
