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
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

EVENTS_TOPIC = "nextbest.events.v1"
DLQ_TOPIC = "nextbest.events.dlq.v1"
ALERTS_TOPIC = "nextbest.alerts.v1"

#: How long a Kafka producer waits for acknowledgement of a flush before the call fails.
KAFKA_FLUSH_TIMEOUT_S = 30.0
#: The API's producer: how long a send may wait for the broker (metadata, acknowledgement)
#: before ``POST /v1/events`` answers 503; under the 5 s a client is promised.
API_SEND_TIMEOUT_S = 3.0
KAFKA_REQUEST_TIMEOUT_MS = 15_000
#: How long the broker may hold a fetch waiting for data: low, so features stay fresh.
KAFKA_FETCH_MAX_WAIT_MS = 100
KAFKA_SESSION_TIMEOUT_MS = 10_000
KAFKA_MAX_POLL_INTERVAL_MS = 60_000


#: Record headers: (name, value) pairs, as Kafka carries them.
Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    #: None is a tombstone (a Kafka record with a null value).
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class TransportError(RuntimeError):
    """A send was not acknowledged: refused by the broker, timed out, or not written."""


class Producer(Protocol):
    def send(self, topic: str, key: str | None, value: bytes | None, headers: Headers = ()) -> None:
        """Buffer one record (``value`` None: a tombstone); may raise ``TransportError``."""
        ...

    def flush(self, timeout_s: float | None = None) -> None:
        """Return once every record this thread sent since its last flush is acknowledged;
        otherwise raise ``TransportError`` (none of them may be taken as written)."""
        ...

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...
    def commit(self, records: Iterable[Record]) -> None:
        """Mark everything up to and including ``records`` (per partition) as processed."""
        ...

    def replay_from(self, offset: int | None = None, timestamp_ms: int | None = None) -> None:
        """Start from ``offset`` (0: the beginning) or from the first record at or after
        ``timestamp_ms`` instead of the committed position (once, when partitions arrive)."""
        ...

    def lag(self) -> dict[int, int]:
        """Records not yet consumed, per partition (empty when unknown)."""
        ...

    def close(self) -> None: ...


# --- local append-only log ------------------------------------------------------------------
_HEADER = struct.Struct(">ii")  # key length (-1: no key), value length (-1: a tombstone)
#: A record with headers starts with this instead of a key length (which is never below -1),
#: then key length, value length, headers length; files without headers read as before.
_WITH_HEADERS = -2
_LENGTHS = struct.Struct(">iii")


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


def _frame(key: str | None, value: bytes | None, headers: Headers) -> bytes:
    encoded = b"" if key is None else key.encode()
    key_length = -1 if key is None else len(encoded)
    body = b"" if value is None else value
    value_length = -1 if value is None else len(body)
    if not headers:
        return _HEADER.pack(key_length, value_length) + encoded + body
    block = json.dumps([[name, data.hex()] for name, data in headers]).encode()
    lengths = _LENGTHS.pack(key_length, value_length, len(block))
    return struct.pack(">i", _WITH_HEADERS) + lengths + encoded + body + block


class LocalProducer:
    """Records wait in memory per thread until that thread flushes them (the API's request
    threads share one producer): a flush writes, fsyncs and reports only its own records."""

    def __init__(self, log: LocalLog) -> None:
        self.log = log
        self._local = threading.local()

    def _pending(self) -> dict[str, list[bytes]]:
        pending: dict[str, list[bytes]] | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = {}
        return pending

    def send(self, topic: str, key: str | None, value: bytes | None, headers: Headers = ()) -> None:
        self._pending().setdefault(topic, []).append(_frame(key, value, headers))

    def flush(self, timeout_s: float | None = None) -> None:
        pending = self._pending()
        try:
            for topic, chunks in list(pending.items()):
                with open(self.log.path(topic), "ab") as handle:
                    # An exclusive lock keeps records from concurrent producers whole.
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    try:
                        handle.write(b"".join(chunks))
                        handle.flush()
                        os.fsync(handle.fileno())
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
                del pending[topic]
        except OSError as error:  # a full disk, a read-only folder: nothing counts as sent
            pending.clear()
            raise TransportError(f"the local event log could not be written: {error}") from error

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
                read = _read_record(handle)
                if read is None:
                    break  # the end, or a record still being written: read it next time
                key, value, headers = read
                records.append(Record(self.topic, 0, self._offset, key, value, headers))
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

    def replay_from(self, offset: int | None = None, timestamp_ms: int | None = None) -> None:
        """Reposition by scanning from the start (the local log keeps no index)."""
        self._offset, self._position, self._positions = 0, 0, {}
        if offset is None and timestamp_ms is None:
            return
        while True:
            before = (self._offset, self._position)
            batch = self.poll(1)
            if not batch:
                return
            record = batch[0]
            if offset is not None and record.offset >= offset:
                self._offset, self._position = before
                return
            if timestamp_ms is not None and _event_time_ms(record.value) >= timestamp_ms:
                self._offset, self._position = before
                return

    def lag(self) -> dict[int, int]:
        return {}

    def close(self) -> None:
        pass


def _read_record(
    handle: Any,
) -> tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...]] | None:
    """The next whole record at the handle's position, or None."""
    header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    key_length, value_length = _HEADER.unpack(header)
    headers_length = 0
    if key_length == _WITH_HEADERS:
        rest = handle.read(_LENGTHS.size - _HEADER.size + 4)
        if len(rest) < _LENGTHS.size - _HEADER.size + 4:
            return None
        key_length, value_length, headers_length = _LENGTHS.unpack(header[4:] + rest)
    key = handle.read(key_length) if key_length >= 0 else None
    if key is not None and len(key) < key_length:
        return None
    value = handle.read(value_length) if value_length >= 0 else None
    if value is not None and len(value) < value_length:
        return None
    headers: tuple[tuple[str, bytes], ...] = ()
    if headers_length:
        block = handle.read(headers_length)
        if len(block) < headers_length:
            return None
        headers = tuple((name, bytes.fromhex(data)) for name, data in json.loads(block))
    return key, value, headers


def _event_time_ms(value: bytes | None) -> int:
    """The event time of a record, for replays by time on the local log (0 if unreadable)."""
    from datetime import datetime

    if value is None:
        return 0
    try:
        moment = json.loads(value)["occurred_at"]
        return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0


# --- Apache Kafka ---------------------------------------------------------------------------
class KafkaProducerAdapter:
    """A kafka-python producer whose sends are checked: each thread's flush waits for the
    futures of its own records and raises ``TransportError`` if any failed.

    ``timeout_s`` bounds each wait on the broker: a send waiting for metadata, a flush waiting
    for acknowledgements, and a record's whole delivery (so a refused or timed-out record is not
    written later behind the caller's back, beyond the rare one already on the wire)."""

    def __init__(self, bootstrap_servers: str, timeout_s: float = KAFKA_FLUSH_TIMEOUT_S) -> None:
        from kafka import KafkaProducer

        self.timeout_s = timeout_s
        timeout_ms = int(timeout_s * 1000)
        request_timeout_ms = min(KAFKA_REQUEST_TIMEOUT_MS, timeout_ms - 100)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=5,
            retries=5,
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=max(timeout_ms, request_timeout_ms + 5),
            max_block_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        self._local = threading.local()

    def _futures(self) -> list[Any]:
        futures: list[Any] | None = getattr(self._local, "futures", None)
        if futures is None:
            futures = self._local.futures = []
        return futures

    def send(self, topic: str, key: str | None, value: bytes | None, headers: Headers = ()) -> None:
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(
                topic,
                key=None if key is None else key.encode(),
                value=value,
                headers=list(headers) or None,
            )
        except KafkaError as error:  # too large for the producer, no metadata in time
            # The caller takes none of this thread's unflushed records as written.
            self._local.futures = []
            raise TransportError(f"{type(error).__name__}: {error}") from error
        self._futures().append(future)

    def flush(self, timeout_s: float | None = None) -> None:
        from kafka.errors import KafkaError

        futures, self._local.futures = self._futures(), []
        try:
            self._producer.flush(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except KafkaError as error:
            raise TransportError(f"not acknowledged in time: {error}") from error
        for future in futures:
            if not future.is_done:
                raise TransportError("not acknowledged in time")
            if future.failed():
                refused = future.exception
                raise TransportError(f"refused: {type(refused).__name__}: {refused}")

    def close(self) -> None:
        self._producer.close(timeout=self.timeout_s)


class KafkaConsumerAdapter:
    """A kafka-python consumer in a group, committing only what it is told to."""

    def __init__(self, bootstrap_servers: str, topic: str, group: str) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        adapter = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            # kafka-python 3 runs these on its IO thread, where nothing may block (no commit).
            # Nothing needs to: the worker processes each poll's records before it polls
            # again, so at a rebalance no batch is half done; what it has not committed yet
            # is redelivered to the new owner, whose state recognises it (see worker.py).
            def on_partitions_revoked(self, revoked):  # type: ignore[no-untyped-def]
                pass

            def on_partitions_assigned(self, assigned):  # type: ignore[no-untyped-def]
                adapter._assigned(list(assigned))

        self._replay: tuple[int | None, int | None] | None = None
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=KAFKA_FETCH_MAX_WAIT_MS,
            # A worker that dies without leaving (SIGKILL, lost host) gives up its partitions
            # after the session timeout; a batch never takes anywhere near the poll interval.
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=KAFKA_SESSION_TIMEOUT_MS // 3,
            max_poll_interval_ms=KAFKA_MAX_POLL_INTERVAL_MS,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS + 15_000,
        )
        # Fetch the topic's metadata before joining: a group formed without it assigns this
        # member nothing, and kafka-python's second join can then stall (seen with 3.0.12).
        self._consumer.partitions_for_topic(topic)
        self._consumer.subscribe([topic], listener=Listener())

    def _assigned(self, partitions: list) -> None:  # type: ignore[type-arg]
        if self._replay is None or not partitions:
            return
        offset, timestamp_ms = self._replay
        self._replay = None
        if timestamp_ms is not None:
            found = self._consumer.offsets_for_times(dict.fromkeys(partitions, timestamp_ms))
            ends = self._consumer.end_offsets(partitions)
            for tp in partitions:
                hit = found.get(tp)
                self._consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        elif offset == 0:
            self._consumer.seek_to_beginning(*partitions)
        elif offset is not None:
            for tp in partitions:
                self._consumer.seek(tp, offset)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
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
        # Partitions lost in a rebalance are not ours to commit: their new owner gets the
        # uncommitted records again, and they change nothing there.
        owned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in upto.items() if tp in owned}
        if offsets:
            self._consumer.commit(offsets)

    def replay_from(self, offset: int | None = None, timestamp_ms: int | None = None) -> None:
        self._replay = (offset, timestamp_ms)

    def lag(self) -> dict[int, int]:
        partitions = list(self._consumer.assignment())
        if not partitions:
            return {}
        ends = self._consumer.end_offsets(partitions)
        return {tp.partition: max(ends[tp] - self._consumer.position(tp), 0) for tp in partitions}

    def close(self) -> None:
        # Leaves the group at once, so its partitions move to the other workers without waiting
        # for the session to time out.
        self._consumer.close(autocommit=False)
