"""The audit log's signed checkpoints on a Kafka topic (``nextbest.audit.checkpoints.v1``): the
production sink of ``consent/stores/audit/sinks.py``. One record per publication, keyed by the
log's origin, its value the publication's JSON.

The topic is made on first use with one partition (publications stay in the order they were
taken) and unlimited retention: a checkpoint is evidence, and a broker's default retention (a
week) would delete it. An operator who makes the topic must keep ``retention.ms=-1``; the
sink refuses to publish to a topic that would delete its records."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from consent.rules.checkpoints import Publication
from consent.stores.audit.sinks import Found, SinkError
from service.adapters.transport import Producer, TransportError

log = logging.getLogger(__name__)

CHECKPOINTS_TOPIC = "nextbest.audit.checkpoints.v1"
#: How long publishing one checkpoint may wait for the broker.
CHECKPOINT_SEND_TIMEOUT_S = 10.0
#: How long reading the topic back may take before it fails.
READ_TIMEOUT_S = 60.0
#: How many of the newest records ``latest`` looks at.
LATEST = 4


class CheckpointTopic:
    """Publications on a Kafka topic (see the module's docstring)."""

    name = "kafka"

    def __init__(
        self, bootstrap_servers: str, topic: str, producer: Callable[[], Producer]
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._make_producer = producer
        self._producer: Producer | None = None  # made on first publication
        self._checked = False

    def publish(self, publication: Publication) -> None:
        if not self._checked:
            self._ensure_topic()
        origin = _origin(publication)
        try:
            if self._producer is None:
                self._producer = self._make_producer()
            self._producer.send(self.topic, origin, publication.to_json().encode())
            self._producer.flush()
        except TransportError as error:
            raise SinkError(f"topic {self.topic}: {error}") from error

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def _ensure_topic(self) -> None:
        """Make the topic with unlimited retention, or check that the one there keeps its
        records."""
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
        from kafka.errors import KafkaError, TopicAlreadyExistsError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, request_timeout_ms=15_000
            )
        except KafkaError as error:
            raise SinkError(f"topic {self.topic}: {error}") from error
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            self.topic,
                            num_partitions=1,
                            replication_factor=-1,  # the broker's default
                            topic_configs={"retention.ms": "-1", "cleanup.policy": "delete"},
                        )
                    ]
                )
            resource = ConfigResource(ConfigResourceType.TOPIC, self.topic)
            described = admin.describe_configs([resource], config_filter="all")
            retention = _config_value(described, self.topic, "retention.ms")
            if retention not in (None, "-1"):
                raise SinkError(
                    f"topic {self.topic} deletes records after {retention} ms: "
                    "checkpoints need retention.ms=-1"
                )
        except KafkaError as error:
            raise SinkError(f"topic {self.topic}: {error}") from error
        finally:
            admin.close()
        self._checked = True

    def _records(self, newest: int | None = None) -> list[Any]:
        """The topic's records, oldest first (only the ``newest`` few, if given)."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                enable_auto_commit=False,
                request_timeout_ms=30_000,
                max_partition_fetch_bytes=8 * 1024 * 1024,
            )
        except KafkaError as error:
            raise SinkError(f"topic {self.topic}: {error}") from error
        try:
            found: list[Any] = []
            for partition in sorted(consumer.partitions_for_topic(self.topic) or ()):
                tp = TopicPartition(self.topic, partition)
                found.extend(_read(consumer, tp, newest))
            return found
        except (KafkaError, TimeoutError) as error:
            raise SinkError(f"topic {self.topic}: {error}") from error
        finally:
            consumer.close()

    def read(self) -> Iterator[Found]:
        for message in self._records():
            where = f"{self.topic}[{message.partition}]@{message.offset}"
            try:
                yield where, Publication.from_json(message.value or b"")
            except ValueError as error:
                yield where, ValueError(f"{where}: {error}")

    def latest(self) -> list[Publication]:
        found = []
        for message in reversed(self._records(LATEST)):
            try:
                found.append(Publication.from_json(message.value or b""))
            except ValueError:
                continue
        return found


def _origin(publication: Publication) -> str:
    return publication.note.split("\n", 1)[0]


def _config_value(described: Any, topic: str, name: str) -> str | None:
    """A topic's effective config value from kafka-python's ``describe_configs`` answer:
    ``{"topic": {name: {key: {"value": ...}}}}``."""
    entry = described.get("topic", {}).get(topic, {}).get(name)
    return None if entry is None else str(entry.get("value"))


def _read(consumer: Any, tp: Any, newest: int | None) -> Iterator[Any]:
    consumer.assign([tp])
    begin = consumer.beginning_offsets([tp])[tp]
    end = consumer.end_offsets([tp])[tp]
    start = begin if newest is None else max(begin, end - newest)
    consumer.seek(tp, start)
    deadline = time.monotonic() + READ_TIMEOUT_S
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {tp.topic}[{tp.partition}] to offset {end} timed out")
        for message in consumer.poll(timeout_ms=500).get(tp, []):
            if message.offset < end:
                yield message
