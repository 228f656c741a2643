"""Event transport behind one small interface: a local append-only log (the embedded default) or
Apache Kafka. The stream worker and the API use only ``Producer`` and ``Consumer``.

Both are at-least-once: a consumer commits an offset only when told that everything before it is
durably processed, and a restarted consumer resumes from the last commit.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

EVENTS_TOPIC = "nextbest.events.v1"
DLQ_TOPIC = "nextbest.events.dlq.v1"
ALERTS_TOPIC = "nextbest.alerts.v1"

#: How long a Kafka producer waits for acknowledgement of a flush before the call fails.
KAFKA_FLUSH_TIMEOUT_S = 30.0
KAFKA_REQUEST_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Producer(Protocol):
    def send(self, topic: str, key: str | None, value: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...
    def commit(self, records: Iterable[Record]) -> None:
        """Mark everything up to and including ``records`` (per partition) as processed."""
        ...

    def close(self) -> None: ...


# --- local append-only log ------------------------------------------------------------------
_HEADER = struct.Struct(">ii")  # key length (-1: no key), value length


class LocalLog:
    """One file per topic under ``root``; offsets are record numbers, one partition (0)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, topic: str) -> Path:
        return self.root / f"{topic}.log"

    def producer(self) -> LocalProducer:
        return LocalProducer(self)

    def consumer(self, topic: str, group: str) -> LocalConsumer:
        return LocalConsumer(self, topic, group)


class LocalProducer:
    def __init__(self, log: LocalLog) -> None:
        self.log = log
        self._pending: dict[str, list[bytes]] = {}

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        encoded = b"" if key is None else key.encode()
        header = _HEADER.pack(-1 if key is None else len(encoded), len(value))
        self._pending.setdefault(topic, []).append(header + encoded + value)

    def flush(self) -> None:
        for topic, chunks in self._pending.items():
            with open(self.log.path(topic), "ab") as handle:
                # An exclusive lock keeps records from concurrent producers whole.
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    handle.write(b"".join(chunks))
                    handle.flush()
                    os.fsync(handle.fileno())
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        self._pending.clear()

    def close(self) -> None:
        self.flush()


class LocalConsumer:
    """Reads from the committed position; commits are a small JSON file written atomically."""

    def __init__(self, log: LocalLog, topic: str, group: str) -> None:
        self.log, self.topic = log, topic
        self._offsets = log.root / "offsets" / f"{group}.{topic}.json"
        self._offsets.parent.mkdir(parents=True, exist_ok=True)
        state = json.loads(self._offsets.read_text()) if self._offsets.exists() else {}
        self._offset = int(state.get("offset", 0))
        self._position = int(state.get("position", 0))
        self._positions: dict[int, int] = {}  # offset -> byte position after it

    def poll(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        path = self.log.path(self.topic)
        if not path.exists():
            return []
        records: list[Record] = []
        with open(path, "rb") as handle:
            handle.seek(self._position)
            while len(records) < max_records:
                header = handle.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                key_length, value_length = _HEADER.unpack(header)
                key = handle.read(key_length) if key_length >= 0 else None
                value = handle.read(value_length)
                if len(value) < value_length:
                    break  # a record still being written; read it next time
                records.append(Record(self.topic, 0, self._offset, key, value))
                self._offset += 1
                self._position = handle.tell()
                self._positions[records[-1].offset] = self._position
        return records

    def commit(self, records: Iterable[Record]) -> None:
        last = max((r.offset for r in records), default=None)
        if last is None:
            return
        temporary = self._offsets.with_suffix(".tmp")
        temporary.write_text(json.dumps({"offset": last + 1, "position": self._positions[last]}))
        os.replace(temporary, self._offsets)
        self._positions = {o: p for o, p in self._positions.items() if o > last}

    def close(self) -> None:
        pass


# --- Apache Kafka ---------------------------------------------------------------------------
class KafkaProducerAdapter:
    def __init__(self, bootstrap_servers: str) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=5,
            retries=5,
            request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
        )

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        self._producer.send(topic, key=None if key is None else key.encode(), value=value)

    def flush(self) -> None:
        self._producer.flush(timeout=KAFKA_FLUSH_TIMEOUT_S)

    def close(self) -> None:
        self._producer.close(timeout=KAFKA_FLUSH_TIMEOUT_S)


class KafkaConsumerAdapter:
    def __init__(self, bootstrap_servers: str, topic: str, group: str) -> None:
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS + 15_000,
        )

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value)
            for messages in batches.values()
            for m in messages
        ]

    def commit(self, records: Iterable[Record]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        upto: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            upto[tp] = max(upto.get(tp, -1), r.offset)
        if upto:
            self._consumer.commit({tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in upto.items()})

    def close(self) -> None:
        self._consumer.close()
