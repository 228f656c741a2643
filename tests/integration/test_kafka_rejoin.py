"""A stream consumer left without partitions rejoins its group on its own (real Kafka): a member
stuck outside the group (kafka-python can stall in a join) would otherwise read nothing until a
restart, and ``nextbest stream --until-idle`` would end having read nothing."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from kafka import KafkaProducer

from service.adapters.kafka_transport import KafkaConsumerAdapter

pytestmark = pytest.mark.kafka


def _read(consumer: KafkaConsumerAdapter, want: int, seconds: float) -> int:
    """Read (and commit, as the worker does) until ``want`` records or the time is up."""
    got = 0
    deadline = time.monotonic() + seconds
    while got < want and time.monotonic() < deadline:
        records = consumer.poll(500, 0.2)
        consumer.commit(records)
        got += len(records)
    return got


def test_a_member_left_without_partitions_rejoins_and_reads(kafka_bootstrap, caplog) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"j{run}.events"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    consumer = KafkaConsumerAdapter(kafka_bootstrap, topic, f"j{run}", rejoin_after_s=2.0)
    try:
        for i in range(20):
            producer.send(topic, key=b"k%d" % i, value=b"before")
        producer.flush()
        assert _read(consumer, 20, 60) == 20
        # The member drops out of the group without joining again, as a stalled join leaves it.
        consumer._consumer.unsubscribe()
        for i in range(20):
            producer.send(topic, key=b"k%d" % i, value=b"after")
        producer.flush()
        with caplog.at_level(logging.WARNING, logger="service.adapters.kafka_transport"):
            assert _read(consumer, 20, 60) == 20
        assert "rejoining the group" in caplog.text
        assert consumer.partitions()
    finally:
        consumer.close()
        producer.close()
