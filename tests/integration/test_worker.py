"""The stream worker on the embedded defaults: local event log into the Feast SQLite store."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feature_repo.activity import FEATURE_NAMES
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC
from service.usecases import pipeline
from training.bank.in_memory import generate
from training.bank.spec import BankSpec


def test_online_features_equal_a_batch_recomputation_and_bad_events_reach_the_dlq(
    embedded,
) -> None:
    bank = generate(BankSpec(seed=11, customers=60, days=35, malformed_fraction=0.01))
    malformed = bank.summary["malformed_events"]
    assert malformed > 20
    records = [(key, value) for _, key, value in bank.records()]
    valid = {json.dumps(e, separators=(",", ":")).encode() for e in bank.event_dicts()[:50]}
    duplicates = [r for r in records if r[1] in valid]
    sent = pipeline.publish(embedded, records + duplicates)  # redelivered: change nothing
    assert sent == bank.summary["events"] + malformed + 50

    # Now is three weeks after the bank's last day: the timers move everyone's windows on.
    now = bank.spec.end + timedelta(days=20, hours=15)
    clock = round(now.timestamp() * 1_000_000)
    stats = pipeline.stream_until_idle(embedded, idle_s=0.3, clock=lambda: clock)
    assert stats.events == bank.summary["events"]
    assert stats.duplicates == 50
    assert stats.dead_letters == malformed
    assert stats.timers_fired >= 60

    expected = reference_features((parse_event(e) for e in bank.event_dicts()), now=now)
    for customer_id, (as_of, values) in expected.items():
        online = embedded.features.read(customer_id)
        assert online.as_of is not None
        assert abs((online.as_of - as_of).total_seconds()) < 1
        activity = {name: online.values[name] for name in FEATURE_NAMES}
        assert activity == pytest.approx({name: values[name] for name in FEATURE_NAMES})

    dead = [json.loads(r.value) for r in embedded.consumer(DLQ_TOPIC).poll(10_000)]
    assert len(dead) == malformed
    topic = embedded.settings.topic(EVENTS_TOPIC)
    assert all(d["error"] == "invalid_event" and d["reason"] for d in dead)
    assert all(d["origin"]["topic"] == topic and d["origin"]["offset"] >= 0 for d in dead)
    raw = set(bank.tables["malformed"]["raw"].to_pylist())
    assert {d["value"].encode() for d in dead if "\x00" not in d["value"]} <= raw


def test_a_restarted_worker_resumes_after_committed_offsets(embedded) -> None:
    bank = generate(BankSpec(seed=12, customers=30, days=10))
    events = bank.event_dicts()
    assert len(events) > 200
    pipeline.publish_events(embedded, events[:100])
    first = pipeline.stream_until_idle(embedded, idle_s=0.2)
    pipeline.publish_events(embedded, events[100:])
    second = pipeline.stream_until_idle(embedded, idle_s=0.2)
    assert (first.events, second.events) == (100, len(events) - 100)


def _consent_event(customer: str, granted: bool, at: str, event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "type": "consent_changed",
        "occurred_at": at,
        "channel": "mobile_app",
        "payload": {
            "purpose": "marketing",
            "channel": "email",
            "granted": granted,
            "source": "app_settings",
            "notice_version": "2026-10",
        },
    }


def test_consent_events_reach_the_registry_once_each_and_the_last_recorded_wins(
    embedded,
) -> None:
    events = [
        _consent_event("C9", True, "2026-11-01T09:00:00Z", "c1"),
        _consent_event("C9", False, "2026-11-02T09:00:00Z", "c2"),
        # The grant redelivered (a producer's retry, a replay): the same event, recorded once,
        # so it cannot come back after the withdrawal and win.
        _consent_event("C9", True, "2026-11-01T09:00:00Z", "c1"),
    ]
    pipeline.publish_events(embedded, events)
    stats = pipeline.stream_until_idle(embedded, idle_s=0.2)
    assert stats.consents == 2 and stats.events == 0  # consent is not behaviour
    current = embedded.registry.current("C9")[("marketing", "email")]
    assert current.granted is False
    assert current.source == "app_settings" and current.notice_version == "2026-10"
    # The bank's time orders; the event's time is kept as when the customer gave it.
    assert current.given_at == datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert current.recorded_at > current.given_at and current.recorded_by == "stream"
    history = embedded.registry.history("C9")
    assert [e.event_id for e in history] == ["c1", "c2"]  # kept, never overwritten
