"""Poison isolation on the embedded defaults (local event log, SQLite): every bad record reaches
the dead-letter topic with its reason and the stream moves on; a record whose processing raises
is found and dead-lettered alone; a failing dependency is retried, never dead-lettered; dead
letters are acknowledged before their offsets are committed, and a replay does not write them
again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feature_repo.activity import FEATURE_NAMES
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from service.adapters.deadletter import DEAD_LETTER_VALUE_BYTES, MAX_RECORD_BYTES
from service.adapters.state import HoldingStates, SQLiteStateStore
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC, Headers, TransportError
from service.bootstrap import Container
from service.usecases import pipeline
from service.usecases.stream_stats import WorkerStats
from service.usecases.worker import StreamWorker

NOW = datetime.now(UTC).replace(microsecond=0)


def login(event_id: str, customer: str, at: datetime, **extra: object) -> dict[str, Any]:
    """A login event (``extra``: other fields, or another ``type`` with its ``payload``)."""
    return {
        "event_id": event_id,
        "customer_id": customer,
        "type": "login",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "channel": "mobile_app",
        **extra,
    }


def good_events(n: int = 30) -> list[dict[str, Any]]:
    return [
        login(f"ok-{i}", f"C{i % 3}", NOW - timedelta(hours=n - i), payload={"method": "pin"})
        for i in range(n)
    ]


def _event(
    event_id: str, customer: str = "CX", at: datetime = NOW, **extra: object
) -> tuple[str, bytes]:
    return "CX", json.dumps(login(event_id, customer, at, **extra)).encode()


#: (key, value) pairs that are each bad for a reason of their own, and that reason's code.
POISON: list[tuple[tuple[str | None, bytes | None], str]] = [
    (_event("bad\nid"), "invalid_event"),
    (_event("bad\x00id"), "invalid_event"),
    (_event("ok-id", "C\nX"), "invalid_event"),
    (_event("nul-text", payload={"method": "p\x00"}), "invalid_event"),
    (("CX", None), "tombstone"),
    (("CX", b"\xff\xfe not utf-8 \x80"), "invalid_event"),
    (("CX", b"{" * 100_000), "invalid_event"),  # deep nesting
    (("CX", b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'), "too_large"),
    (_event("future", at=datetime(2099, 1, 1, tzinfo=UTC)), "out_of_bounds"),
    (_event("epoch", at=datetime(1970, 1, 1, tzinfo=UTC)), "out_of_bounds"),
]


def _publish(container: Container, records: list[tuple[str | None, bytes | None]]) -> None:
    producer = container.producer()
    topic = container.settings.topic(EVENTS_TOPIC)
    for key, value in records:
        producer.send(topic, key, value)
    producer.flush()


def _dead_letters(container: Container) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"") for r in container.consumer(DLQ_TOPIC).poll(100_000, 0)]


def _assert_features_equal_reference(container: Container, events: list[dict[str, Any]]) -> None:
    # As of now: a midnight since a customer's last event moved her row to it (the timers).
    expected = reference_features((parse_event(e) for e in events), now=datetime.now(UTC))
    assert expected
    for customer, (as_of, values) in expected.items():
        online = container.features.read(customer)
        assert online.as_of is not None and abs((online.as_of - as_of).total_seconds()) < 1
        got = {name: online.values[name] for name in FEATURE_NAMES}
        assert got == pytest.approx({name: values[name] for name in FEATURE_NAMES})


def test_every_poison_record_is_dead_lettered_with_its_reason_and_the_rest_applied(
    embedded: Container,
) -> None:
    good = good_events()
    records: list[tuple[str | None, bytes | None]] = []
    for i, event in enumerate(good):  # poison interleaved with good events
        records.append((event["customer_id"], json.dumps(event).encode()))
        if i < len(POISON):
            records.append(POISON[i][0])
    _publish(embedded, records)

    stats = pipeline.stream_until_idle(embedded, idle_s=0.3)
    assert stats.events == len(good)
    assert stats.dead_letters == len(POISON)

    letters = _dead_letters(embedded)
    assert [letter["error"] for letter in letters] == [code for _, code in POISON]
    assert all(letter["reason"] for letter in letters)
    topic = embedded.settings.topic(EVENTS_TOPIC)
    assert all(letter["origin"]["topic"] == topic for letter in letters)
    by_error = {letter["error"]: letter for letter in letters}
    assert by_error["tombstone"]["value"] is None
    huge = by_error["too_large"]
    assert huge["value_bytes"] > MAX_RECORD_BYTES and huge["value_truncated"] is True
    assert len(huge["value"].encode()) <= DEAD_LETTER_VALUE_BYTES
    bounds = [letter["reason"] for letter in letters if letter["error"] == "out_of_bounds"]
    assert "2099" in bounds[0] and "future" in bounds[0] and "past" in bounds[1]
    # What an erasure looks for: the customer named in the record.
    assert {letter["customer_id"] for letter in letters if letter["value"]} >= {"CX"}
    _assert_features_equal_reference(embedded, good)


class RefusingStates(SQLiteStateStore):
    """A state store that refuses one customer's state for a reason of that record (as
    PostgreSQL refuses a NUL byte), and fails like a lost connection ``outages`` times."""

    def __init__(self, *args, refuse: str | None = None, outages: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refuse, self.outages = refuse, outages

    def put_many(self, items: Mapping[str, bytes]) -> None:
        if self.outages:
            self.outages -= 1
            raise ConnectionError("the store went away")
        if self.refuse in items:
            raise ValueError(f"cannot store {self.refuse}")
        super().put_many(items)


def _worker(container: Container, states: SQLiteStateStore, dlq=None) -> StreamWorker:
    built = container.worker()
    built.backoff = lambda attempt: 0.01
    built.states.close()
    built.states = HoldingStates(states)
    if dlq is not None:
        built.dead_letters.producer = dlq
    return built


def _run(worker: StreamWorker) -> WorkerStats:
    try:
        return worker.run(idle_exit_s=0.3)
    finally:
        worker.close()


def test_a_record_whose_processing_raises_is_found_and_dead_lettered_alone(
    embedded: Container,
) -> None:
    good = good_events(40)
    poison = login("poison-1", "C-POISON", NOW - timedelta(hours=3))
    events = [*good[:17], poison, *good[17:]]
    pipeline.publish_events(embedded, events)
    states = RefusingStates(embedded.settings.home / "stream_state.db", refuse="C-POISON")
    stats = _run(_worker(embedded, states))
    assert (stats.events, stats.dead_letters) == (len(good), 1)
    (letter,) = _dead_letters(embedded)
    assert letter["error"] == "processing_failed"
    assert letter["reason"] == "ValueError: cannot store C-POISON"
    assert letter["customer_id"] == "C-POISON" and letter["origin"]["offset"] == 17
    _assert_features_equal_reference(embedded, good)


def test_a_failing_dependency_is_retried_and_nothing_is_dead_lettered(embedded: Container) -> None:
    good = good_events(10)
    pipeline.publish_events(embedded, good)
    states = RefusingStates(embedded.settings.home / "stream_state.db", outages=2)
    stats = _run(_worker(embedded, states))
    assert (stats.events, stats.dead_letters) == (len(good), 0)
    _assert_features_equal_reference(embedded, good)


class RefusingProducer:
    """A DLQ producer whose broker acknowledges nothing (the transport under test is Kafka's
    in tests/hostile/test_sends_fail.py; this one stands for any)."""

    sent = 0

    def send(self, topic: str, key: str | None, value: bytes | None, headers: Headers = ()) -> None:
        self.sent += 1

    def flush(self, timeout_s: float | None = None) -> None:
        raise TransportError("refused: the test's broker acknowledges nothing")

    def close(self) -> None:
        pass


def test_no_offset_is_committed_before_its_dead_letter_is_acknowledged(
    embedded: Container,
) -> None:
    good = good_events(5)
    records: list[tuple[str | None, bytes | None]] = [
        (e["customer_id"], json.dumps(e).encode()) for e in good
    ]
    records.insert(2, POISON[0][0])
    _publish(embedded, records)
    refusing = RefusingProducer()
    states = SQLiteStateStore(embedded.settings.home / "stream_state.db")
    worker = _worker(embedded, states, dlq=refusing)
    with pytest.raises(TransportError):
        try:
            worker.run(idle_exit_s=0.3)
        finally:
            worker.close()
    assert refusing.sent >= 2  # tried again before giving up
    assert _dead_letters(embedded) == []
    # Nothing was committed: a worker with a working DLQ gets every record again.
    stats = pipeline.stream_until_idle(embedded, idle_s=0.3)
    assert stats.dead_letters == 1 and stats.duplicates == len(good)
    assert [letter["origin"]["offset"] for letter in _dead_letters(embedded)] == [2]


def test_a_replay_from_offset_zero_does_not_write_the_dead_letters_again(
    embedded: Container,
) -> None:
    records: list[tuple[str | None, bytes | None]] = [
        (e["customer_id"], json.dumps(e).encode()) for e in good_events(6)
    ]
    records[3:3] = [POISON[0][0], POISON[4][0]]
    _publish(embedded, records)
    first = pipeline.stream_until_idle(embedded, idle_s=0.3)
    assert first.dead_letters == 2
    worker = embedded.worker()
    worker.states.clear()  # nextbest stream --reset-state --from-offset 0
    worker.consumer.replay_from(0)
    try:
        again = worker.run(idle_exit_s=0.3)
    finally:
        worker.close()
    assert (again.events, again.dead_letters, again.dead_letters_known) == (6, 0, 2)
    letters = _dead_letters(embedded)
    assert len(letters) == 2
    assert [letter["origin"]["offset"] for letter in letters] == [3, 4]


def test_dead_letters_carry_their_origin_as_kafka_key_and_the_sender(
    embedded: Container,
) -> None:
    producer = embedded.producer()
    topic = embedded.settings.topic(EVENTS_TOPIC)
    author = json.dumps({"name": "app-backend", "role": "channel"}).encode()
    producer.send(topic, "CX", b"not json", [("nextbest-principal", author)])
    producer.flush()
    pipeline.stream_until_idle(embedded, idle_s=0.3)
    (record,) = embedded.consumer(DLQ_TOPIC).poll(10, 0)
    assert record.key == f"{topic}:0:0".encode()
    letter = json.loads(record.value or b"")
    assert json.loads(letter["principal"]) == {"name": "app-backend", "role": "channel"}
    assert letter["key"] == "CX" and letter["customer_id"] == "CX"
