"""Scenario 2 of issue 17: poison records interleaved with normal events through the real Kafka
(a raw producer for the bad ones). The worker keeps running, each bad record is in the
dead-letter topic with a reason, the committed offsets reach the end of every partition, and
the other customers' features equal a recomputation from their events.

The events topic is made to accept records of up to 12 MiB (``max.message.bytes``), so the
10 MB record reaches the worker and the worker's own bound (``MAX_RECORD_BYTES``) is what
refuses it: a broker with Kafka's default 1 MiB would refuse it at the producer instead (that
refusal is scenario 4's, tests/hostile/test_sends_fail.py).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from feature_repo.activity import FEATURE_NAMES
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from service.adapters.deadletter import DEAD_LETTER_VALUE_BYTES
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC
from service.bootstrap import Container
from tests.conftest import real_stack_settings
from training.bank.in_memory import generate
from training.bank.spec import BankSpec

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.postgres]

PARTITIONS = 3
BIG = 10 * 1024 * 1024
TOPIC_MAX_BYTES = 12 * 1024 * 1024
NOW = datetime.now(UTC).replace(microsecond=0)


def _event(event_id: str, at: datetime = NOW, customer: str = "CPOISON") -> bytes:
    stamp = at.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "event_id": event_id,
            "customer_id": customer,
            "type": "login",
            "occurred_at": stamp,
            "channel": "mobile_app",
        }
    ).encode()


#: name -> (value, the dead letter's error code)
POISON: dict[str, tuple[bytes | None, str]] = {
    "newline_in_event_id": (_event("evil\nid"), "invalid_event"),
    "nul_in_event_id": (_event("evil\x00id"), "invalid_event"),
    "newline_in_customer_id": (_event("fine-id", customer="C\n1"), "invalid_event"),
    "tombstone": (None, "tombstone"),
    "ten_megabytes": (b'{"pad": "' + b"x" * BIG + b'"}', "too_large"),
    "dated_2099": (_event("from-2099", datetime(2099, 1, 1, tzinfo=UTC)), "out_of_bounds"),
    "dated_1970": (_event("from-1970", datetime(1970, 1, 1, tzinfo=UTC)), "out_of_bounds"),
    "not_utf8": (b"\xff\xfe\x00\x80", "invalid_event"),
}


@pytest.fixture
def container(tmp_path: Path, kafka_bootstrap, redis_url, postgres_url):
    with real_stack_settings(tmp_path / "home", kafka_bootstrap, redis_url, postgres_url) as s:
        built = Container(s)
        built.feature_store  # noqa: B018 - registers the feature views before the worker
        yield built
        built.close()


def test_poison_records_are_dead_lettered_and_every_partition_moves_on(
    container: Container, kafka_bootstrap: str
) -> None:
    topic = container.settings.topic(EVENTS_TOPIC)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics(
        [
            NewTopic(
                topic,
                PARTITIONS,
                1,
                topic_configs={"max.message.bytes": str(TOPIC_MAX_BYTES)},
            )
        ]
    )
    bank = generate(BankSpec(seed=17, customers=40, days=20, malformed_fraction=0.0))
    good = [(key, value) for _, key, value in bank.records()]
    assert len(good) > 500
    # Each poison record after a stretch of good ones, on every partition in turn (by key).
    records: list[tuple[str, bytes | None, str | None]] = []
    step = len(good) // (len(POISON) + 1)
    poison = iter(POISON.items())
    for i, (key, value) in enumerate(good):
        records.append((key or "", value, None))
        if i % step == step - 1 and (item := next(poison, None)) is not None:
            name, (bad, _) = item
            records.append((f"CPOISON{i % 7}", bad, name))
    assert sum(1 for r in records if r[2]) == len(POISON)

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=TOPIC_MAX_BYTES
    )
    futures = [producer.send(topic, key=k.encode(), value=v) for k, v, _ in records]
    producer.flush(timeout=60)
    assert all(f.succeeded() for f in futures)  # the broker took every record, the 10 MB too
    producer.close()
    sent = {
        name: f.get().partition for (_, _, name), f in zip(records, futures, strict=True) if name
    }

    worker = container.worker()
    began = time.monotonic()
    try:
        stats = worker.run(idle_exit_s=5)
    finally:
        worker.close()
    elapsed = time.monotonic() - began

    # Every bad record is in the DLQ once, with its reason; the 10 MB one is cut.
    reader = KafkaConsumer(
        container.settings.topic(DLQ_TOPIC),
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
    )
    letters = [(m.key, json.loads(m.value)) for m in reader]
    reader.close()
    assert len(letters) == len(POISON) == stats.dead_letters
    by_offset = {(d["origin"]["partition"], d["origin"]["offset"]): d for _, d in letters}
    assert all(key == f"{topic}:{p}:{o}".encode() for key, d in letters for p, o in [
        (d["origin"]["partition"], d["origin"]["offset"])
    ])  # fmt: skip
    codes = sorted(d["error"] for d in by_offset.values())
    assert codes == sorted(code for _, code in POISON.values())
    assert all(d["reason"] and d["key"].startswith("CPOISON") for d in by_offset.values())
    huge = next(d for d in by_offset.values() if d["error"] == "too_large")
    assert huge["value_bytes"] > BIG and len(huge["value"].encode()) <= DEAD_LETTER_VALUE_BYTES
    assert {d["origin"]["partition"] for d in by_offset.values()} == set(sent.values())

    # The committed offsets reached the end of every partition.
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    group = container.settings.consumer_group
    committed = admin.list_group_offsets(group)[group]
    ends = KafkaConsumer(bootstrap_servers=kafka_bootstrap).end_offsets(partitions)
    admin.close()
    assert {tp: committed[tp].offset for tp in partitions} == ends

    # The other customers' features equal a recomputation from their events, as of the day the
    # watermarks reached (the timers moved their windows on from the bank's last day).
    published = container.watermark_store().read()
    assert set(published) == set(range(PARTITIONS)), published
    now = datetime.fromtimestamp(min(published.values()) / 1e6, UTC)
    assert len({at // 86_400_000_000 for at in published.values()}) == 1
    expected = reference_features((parse_event(e) for e in bank.event_dicts()), now=now)
    assert stats.events == len(good) == bank.summary["events"] and stats.late == 0
    customers = sorted(expected)
    online = container.feature_store.get_online_features(
        features=[f"customer_activity:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()
    wrong = [
        (c, n, online[n][i], expected[c][1][n])
        for i, c in enumerate(customers)
        for n in FEATURE_NAMES
        if online[n][i] != pytest.approx(expected[c][1][n], rel=1e-6, abs=1e-6)
    ]
    assert wrong == []
    print(
        json.dumps(
            {
                "records_sent": len(records),
                "poison_sent": len(POISON),
                "dead_lettered": len(letters),
                "good_applied": stats.events,
                "good_lost": len(good) - stats.events,
                "worker_seconds_incl_5s_idle": round(elapsed, 1),
            }
        )
    )
