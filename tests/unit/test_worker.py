"""The stream worker on the embedded defaults: local event log into the Feast SQLite store."""

import json

from feature_repo.aggregates import FEATURE_NAMES, batch_features
from feature_repo.events import parse_event
from service import pipeline
from service.transport import DLQ_TOPIC, EVENTS_TOPIC
from training.synthetic import BankSpec, generate


def test_online_features_equal_a_batch_recomputation_and_bad_events_reach_the_dlq(
    embedded,
) -> None:
    bank = generate(BankSpec(seed=11, customers=60, days=35))
    events = bank.event_dicts()
    malformed = [
        b"{not json",
        json.dumps({**events[0], "event_id": "bad-1", "type": "teleport"}).encode(),
        json.dumps({**events[1], "event_id": "bad-2", "occurred_at": "yesterday"}).encode(),
    ]
    producer = embedded.producer()
    topic = embedded.settings.topic(EVENTS_TOPIC)
    for i, event in enumerate(events):
        producer.send(topic, event["customer_id"], json.dumps(event).encode())
        if i % 500 == 0 and malformed:
            producer.send(topic, None, malformed.pop())
    for event in events[:50]:  # redelivered duplicates change nothing
        producer.send(topic, event["customer_id"], json.dumps(event).encode())
    producer.flush()

    stats = pipeline.stream_until_idle(embedded, idle_s=0.3)
    assert stats.events == len(events)
    assert stats.duplicates == 50
    assert stats.dead_letters == 3

    expected = batch_features(parse_event(e) for e in events)
    for customer_id, (as_of, values) in expected.items():
        online = embedded.features.read(customer_id)
        assert online.as_of is not None
        assert abs((online.as_of - as_of).total_seconds()) < 1
        assert online.values == {name: values[name] for name in FEATURE_NAMES}

    dead = [json.loads(r.value) for r in embedded.consumer(DLQ_TOPIC).poll(10)]
    assert len(dead) == 3
    assert all(d["error"] == "invalid_event" and d["reason"] for d in dead)
    assert all(d["origin"]["topic"] == topic and d["origin"]["offset"] >= 0 for d in dead)
    assert {
        "teleport" in d["value"] or "yesterday" in d["value"] or d["value"] == "{not json"
        for d in dead
    } == {True}


def test_a_restarted_worker_resumes_after_committed_offsets(embedded) -> None:
    bank = generate(BankSpec(seed=12, customers=30, days=10))
    events = bank.event_dicts()
    assert len(events) > 200
    pipeline.publish_events(embedded, events[:100])
    first = pipeline.stream_until_idle(embedded, idle_s=0.2)
    pipeline.publish_events(embedded, events[100:])
    second = pipeline.stream_until_idle(embedded, idle_s=0.2)
    assert (first.events, second.events) == (100, len(events) - 100)
