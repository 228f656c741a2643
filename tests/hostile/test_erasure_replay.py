"""Done-when scenario 6: erasure sticks.

A customer with events, consents (from the stream and the API), an alert and dead letters is
erased; then the whole event topic is replayed from offset 0 with the state reset (the
documented rebuild, ``nextbest stream --reset-state --from-offset 0``, run as a process). Their
features, consents and alerts stay gone, no dead letter names them, the audit chain verifies and
holds the erasure record (without the identity); another customer's data is untouched. On real
Kafka, Redis and PostgreSQL, and on the embedded defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import select

from consent.rules.chain import mentions
from consent.stores.customers import KnownCustomer
from consent.stores.tables import audit_log, erasure_register
from service.adapters.erasure_purge import overwritten
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.settings import Settings
from tests.conftest import key_headers, make_settings, real_stack_settings
from tests.doubles import GOOD_STANDING, sample_alert

NEXTBEST = str(Path(sys.executable).with_name("nextbest"))
ERASED = "C0000666"
OTHER = "C0000777"


def _event(customer: str, n: int, **fields: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(hours=10 - n)
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": "login",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "channel": "mobile_app",
        **fields,
    }


def _records(customer: str) -> list[tuple[str | None, bytes]]:
    """Events, a consent event, a malformed event keyed by the customer and an unkeyed one that
    names them (both dead letters)."""
    events = [_event(customer, n) for n in range(3)]
    events.append(
        _event(
            customer,
            3,
            type="consent_changed",
            payload={
                "purpose": "marketing",
                "channel": "email",
                "granted": True,
                "source": "app",
                "notice_version": "v1",
            },
        )
    )
    records: list[tuple[str | None, bytes]] = [(customer, json.dumps(e).encode()) for e in events]
    records.append((customer, json.dumps(_event(customer, 4, type="no_such_type")).encode()))
    records.append((None, b'{"customer_id": "' + customer.encode() + b'", "broken'))
    return records


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    fields = settings.model_dump(exclude_none=True)
    for name in ("home", "event_transport", "kafka_bootstrap_servers", "topic_namespace"):
        env[f"NEXTBEST_{name.upper()}"] = str(fields[name])
    for name in ("consumer_group", "online_store", "redis_url", "feast_project", "database_url"):
        if name in fields:
            env[f"NEXTBEST_{name.upper()}"] = str(fields[name])
    env["NEXTBEST_LOG_LEVEL"] = "WARNING"
    return env


def _dead_letters(container: Container) -> list[tuple[bytes | None, bytes | None]]:
    """Every record the dead-letter topic holds, from its beginning."""
    topic = container.settings.topic(DLQ_TOPIC)
    if container.settings.event_transport == "local":
        consumer = container.local_log.consumer(topic, "test-reader")
        consumer.replay_from(0)
        return [(r.key, r.value) for r in consumer.poll(1_000_000, 0)]
    reader = KafkaConsumer(bootstrap_servers=container.settings.kafka_bootstrap_servers)
    try:
        tps = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        ends = reader.end_offsets(tps)
        letters = []
        while any(reader.position(tp) < ends[tp] for tp in tps):
            for messages in reader.poll(timeout_ms=1000).values():
                letters += [(m.key, m.value) for m in messages]
        return letters
    finally:
        reader.close()


def _names(letter: tuple[bytes | None, bytes | None], customer: str) -> bool:
    key, value = letter
    text = (key or b"").decode("utf-8", "replace") + " " + (value or b"").decode("utf-8", "replace")
    return mentions(text, customer)


def _stream(container: Container, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [NEXTBEST, "stream", "--until-idle", "3", "--no-alerts", *args],
        env=_env(container.settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(params=["real", "embedded"])
def stack(request, tmp_path: Path) -> Iterator[Container]:
    if request.param == "embedded":
        container = Container(make_settings(tmp_path / "home"))
        yield container
        container.close()
        return
    kafka = request.getfixturevalue("kafka_bootstrap")
    redis = request.getfixturevalue("redis_url")
    postgres = request.getfixturevalue("postgres_url")
    with real_stack_settings(tmp_path / "home", kafka, redis, postgres) as settings:
        container = Container(settings)
        yield container
        container.close()


def test_an_erased_customer_stays_gone_after_a_full_replay(stack: Container) -> None:
    container = stack
    container.feature_store  # noqa: B018 - registers the views before the worker starts
    container.directory.upsert([KnownCustomer(ERASED, None, "RM0001", GOOD_STANDING)])
    producer = container.producer()
    topic = container.settings.topic(EVENTS_TOPIC)
    for key, value in _records(ERASED) + _records(OTHER):
        producer.send(topic, key, value)
    producer.close()
    first = _stream(container)
    assert first["events"] == 6 and first["consents"] == 2 and first["erased"] == 0
    with TestClient(create_app(container)) as client:
        consent = {
            "consents": [
                {"purpose": "marketing", "channel": "sms", "granted": True}
                | {"source": "t", "notice_version": "v1"}
            ]
        }
        put = client.put(
            f"/v1/customers/{ERASED}/consents", json=consent, headers=key_headers(container, "rm")
        )
        assert put.status_code == 200, put.text
        container.alert_store.add([sample_alert(ERASED, "RM0001")], 20, datetime.now(UTC))
        assert container.features.read(ERASED).known
        assert len(container.registry.history(ERASED)) == 2
        assert container.alert_store.get(f"alert-{ERASED}") is not None
        assert sum(_names(letter, ERASED) for letter in _dead_letters(container)) == 2

        compliance = key_headers(container, "compliance")
        erased = client.delete(f"/v1/customers/{ERASED}", headers=compliance)
        assert erased.status_code == 200, erased.text
        report = erased.json()
        assert (report["consent_entries"], report["alerts"], report["dead_letters"]) == (2, 1, 2)
        # The local event log is the embedded stack's raw event store: overwritten too. Kafka's
        # event topic keeps them until its retention; the replay below drops them.
        local = container.settings.event_transport == "local"
        assert report["raw_events"] == (6 if local else 0)

        # The documented rebuild: every record again, from offset 0, with the state reset.
        replay = _stream(container, "--reset-state", "--from-offset", "0")
        assert replay["erased"] == 6  # 4 events (one a consent event) and the 2 bad records
        # The other customer's events again; their consent event is recorded once, not twice.
        assert replay["events"] == 3 and replay["consents"] == 0

        assert not container.features.read(ERASED).known
        assert container.features.read(OTHER).known
        assert container.registry.history(ERASED) == []
        assert len(container.registry.history(OTHER)) == 1
        assert container.alert_store.get(f"alert-{ERASED}") is None
        letters = _dead_letters(container)
        assert not any(_names(letter, ERASED) for letter in letters)
        # The other customer's letters are kept (a replay does not write them again), and
        # nothing else is in the topic but the erased customer's overwritten letters (local log).
        live = [letter for letter in letters if not overwritten(letter[1])]
        assert len(live) == 2 and all(_names(letter, OTHER) for letter in live)

        verified = client.get("/v1/audit/verify", headers=compliance).json()
    assert verified["ok"] is True
    with container.engine.connect() as connection:
        rows = connection.execute(select(audit_log)).all()
        register = connection.execute(select(erasure_register)).all()
    bodies = [json.loads(row.body) for row in rows]
    (record,) = [b for b in bodies if b.get("operation") == "erasure"]
    assert record["operation_id"] == report["erasure_id"]
    details = record["details"]
    assert details["principal"].startswith("compliance:")
    assert details["counts"]["consent_entries"] == 2
    assert [r.ref for r in register] == [details["register_ref"]]
    assert not any(mentions(str(tuple(row)), ERASED) for row in [*rows, *register])
