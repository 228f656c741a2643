"""The local append-only log: the embedded transport, one file per topic and partition, for a
single machine.

A record is framed as its key length (-1: no key) and value length (-1: a tombstone), big-endian,
then the key and the value; a record with headers starts with a marker instead (see ``_frame``).
Producers append under an exclusive lock, so records from concurrent producers stay whole.

A log has one partition unless made with more (``NEXTBEST_LOCAL_PARTITIONS``): a keyed record
goes to the partition of its key's CRC-32, so a customer's events stay in order in one of them,
and a worker process per partition spreads the stream over a machine's cores, as a Kafka
consumer group spreads it over its members. Partition 0 keeps the file and offsets of a log
with one. The count is fixed when the log is first written, as a Kafka topic's is, because
moving keys to other partitions would split a customer's events between two readers: a log
opened with another count is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from service.adapters.transport import Headers, Record, TransportError

_HEADER = struct.Struct(">ii")  # key length (-1: no key), value length (-1: a tombstone)
#: A record with headers starts with this instead of a key length (which is never below -1),
#: then key length, value length, headers length; files without headers read as before.
_WITH_HEADERS = -2
_LENGTHS = struct.Struct(">iii")
#: Where a log records its partition count (a log without it, written before partitions
#: existed, has one).
_PARTITIONS_FILE = "partitions"


class LocalLog:
    """One file per topic and partition under ``root``; offsets are record numbers per
    partition."""

    def __init__(self, root: Path, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError("a log has at least one partition")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        recorded = _recorded_partitions(root)
        if recorded is None:
            temporary = root / f".{_PARTITIONS_FILE}.tmp"
            temporary.write_text(str(partitions))
            os.replace(temporary, root / _PARTITIONS_FILE)
        elif recorded != partitions:
            raise TransportError(
                f"the local event log in {root} has {recorded} partition(s), not {partitions}: "
                "a log's partitions are fixed when it is first written"
            )

    def path(self, topic: str, partition: int = 0) -> Path:
        return self.root / (f"{topic}.log" if partition == 0 else f"{topic}.{partition}.log")

    def paths(self, topic: str) -> list[Path]:
        """Every partition's file of ``topic`` (some may not exist yet)."""
        return [self.path(topic, p) for p in range(self.partitions)]

    def partition_of(self, key: str | None) -> int:
        if key is None or self.partitions == 1:
            return 0
        return zlib.crc32(key.encode()) % self.partitions

    def producer(self) -> LocalProducer:
        return LocalProducer(self)

    def consumer(
        self, topic: str, group: str, partitions: Sequence[int] | None = None
    ) -> LocalConsumer:
        """A reader of ``partitions`` of ``topic`` (all of them by default) for ``group``;
        the partitions are assigned, not balanced: one reader per partition and group."""
        return LocalConsumer(self, topic, group, partitions)


def _recorded_partitions(root: Path) -> int | None:
    marker = root / _PARTITIONS_FILE
    if marker.exists():
        return int(marker.read_text())
    return 1 if any(root.glob("*.log")) else None


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

    def _pending(self) -> dict[tuple[str, int], list[bytes]]:
        pending: dict[tuple[str, int], list[bytes]] | None = getattr(self._local, "pending", None)
        if pending is None:
            pending = self._local.pending = {}
        return pending

    def send(self, topic: str, key: str | None, value: bytes | None, headers: Headers = ()) -> None:
        place = (topic, self.log.partition_of(key))
        self._pending().setdefault(place, []).append(_frame(key, value, headers))

    def flush(self, timeout_s: float | None = None) -> None:
        pending = self._pending()
        try:
            for (topic, partition), chunks in list(pending.items()):
                with open(self.log.path(topic, partition), "ab") as handle:
                    # An exclusive lock keeps records from concurrent producers whole.
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    try:
                        handle.write(b"".join(chunks))
                        handle.flush()
                        os.fsync(handle.fileno())
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
                del pending[(topic, partition)]
        except OSError as error:  # a full disk, a read-only folder: nothing counts as sent
            pending.clear()
            raise TransportError(f"the local event log could not be written: {error}") from error

    def partition_of(self, topic: str, key: str) -> int:
        return self.log.partition_of(key)

    def close(self) -> None:
        self.flush()


class LocalConsumer:
    """Reads its partitions from their committed positions, a few records of each in turn;
    commits are a small JSON file per partition, written atomically."""

    def __init__(
        self, log: LocalLog, topic: str, group: str, partitions: Sequence[int] | None = None
    ) -> None:
        owned = list(range(log.partitions)) if partitions is None else sorted(set(partitions))
        if not owned or not all(0 <= p < log.partitions for p in owned):
            raise ValueError(f"partitions {partitions} are not among the log's {log.partitions}")
        self.log, self.topic = log, topic
        self._readers = [_PartitionReader(log, topic, group, p) for p in owned]
        self._next = 0  # the reader the next poll starts with

    def poll(self, max_records: int, timeout_s: float = 0.0) -> list[Record]:
        records: list[Record] = []
        count = len(self._readers)
        for turn in range(count):
            if len(records) >= max_records:
                break
            reader = self._readers[(self._next + turn) % count]
            records += reader.poll(max_records - len(records))
        self._next = (self._next + 1) % count
        return records

    def commit(self, records: Iterable[Record]) -> None:
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        for reader in self._readers:
            if reader.partition in last:
                reader.commit(last[reader.partition])

    def replay_from(self, offset: int | None = None, timestamp_ms: int | None = None) -> None:
        """Reposition every partition by scanning it from the start (the local log keeps no
        index); ``offset`` counts in each partition, as Kafka's do."""
        for reader in self._readers:
            reader.replay_from(offset, timestamp_ms)

    def lag(self) -> dict[int, int]:
        return {}

    def partitions(self) -> list[int]:
        return [reader.partition for reader in self._readers]

    def close(self) -> None:
        pass


class _PartitionReader:
    """One partition's file, read from the committed position."""

    def __init__(self, log: LocalLog, topic: str, group: str, partition: int) -> None:
        self.path, self.topic, self.partition = log.path(topic, partition), topic, partition
        suffix = "" if partition == 0 else f".{partition}"
        self._offsets = log.root / "offsets" / f"{group}.{topic}{suffix}.json"
        self._offsets.parent.mkdir(parents=True, exist_ok=True)
        state = json.loads(self._offsets.read_text()) if self._offsets.exists() else {}
        self._offset = int(state.get("offset", 0))
        self._position = int(state.get("position", 0))
        self._positions: dict[int, int] = {}  # offset -> byte position after it

    def poll(self, max_records: int) -> list[Record]:
        if not self.path.exists():
            return []
        records: list[Record] = []
        with open(self.path, "rb") as handle:
            handle.seek(self._position)
            while len(records) < max_records:
                read = _read_record(handle)
                if read is None:
                    break  # the end, or a record still being written: read it next time
                key, value, headers = read
                record = Record(self.topic, self.partition, self._offset, key, value, headers)
                records.append(record)
                self._offset += 1
                self._position = handle.tell()
                self._positions[records[-1].offset] = self._position
        return records

    def commit(self, last: int) -> None:
        temporary = self._offsets.with_suffix(".tmp")
        temporary.write_text(json.dumps({"offset": last + 1, "position": self._positions[last]}))
        os.replace(temporary, self._offsets)
        self._positions = {o: p for o, p in self._positions.items() if o > last}

    def replay_from(self, offset: int | None, timestamp_ms: int | None) -> None:
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
