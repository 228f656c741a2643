"""What an erasure removes outside the operational store: the customer's dead letters, their raw
events in the local event log and their rows in the offline feature history.

Dead letters carry the raw record that failed, so they hold the customer's data. Kafka cannot
delete one record: per partition that holds a letter of the customer, the others' letters are
written again at the end of the same partition and everything before the old end is deleted
(``DeleteRecords``). Their origin (topic, partition, offset) is in the letter, so nothing of
them is lost but their offset in the dead-letter topic. On the local log (the embedded
default) the customer's letters, and their events in the event log, are overwritten in place
with a marker of the same length, so every offset and byte position stays where it was; the
stream worker drops the markers. Kafka's event topic keeps a customer's raw events until its
retention deletes them (the operator's setting); the worker drops them on every replay.

Offline feature parts (Parquet) that hold rows of the customer are rewritten without them, each
under its own name by an atomic rename; the stream only ever adds new parts.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consent.rules.chain import mentions
from feature_repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW
from feature_repo.store import StoreLocation
from service.adapters.features.offline import write_part

#: (record key, record value) -> whether the record belongs to the erased customer.
Matcher = Callable[[bytes | None, bytes | None], bool]

#: What an overwritten local record reads as (padded with spaces to the record's length).
ERASED_MARKER = b'{"erased":true}'
#: How long reading a dead-letter partition to its end may take before the erasure fails
#: (and is run again).
KAFKA_READ_TIMEOUT_S = 120.0
KAFKA_SEND_TIMEOUT_S = 30.0


def naming(customer_id: str) -> Matcher:
    """Whether a dead letter names the customer: by its Kafka key, the original record's key,
    the event's ``customer_id``, or anywhere in its text (a raw record that did not parse)."""
    encoded = customer_id.encode()

    def matches(key: bytes | None, value: bytes | None) -> bool:
        if key is not None and (
            key == encoded or mentions(key.decode("utf-8", "replace"), customer_id)
        ):
            return True
        return value is not None and mentions(value.decode("utf-8", "replace"), customer_id)

    return matches


# --- the local log --------------------------------------------------------------------------
_HEADER_SIZE = 8  # service.adapters.local_log._HEADER: key length (-1: none), value length


def redact_local_log(path: Path, matches: Matcher) -> int:
    """Overwrite the matching records of a local log file in place (same lengths); how many.
    Producers append under the same exclusive lock, so no record is half written meanwhile."""
    if not path.exists():
        return 0
    redacted = 0
    with open(path, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            while True:
                start = handle.tell()
                header = handle.read(_HEADER_SIZE)
                if len(header) < _HEADER_SIZE:
                    break
                key_length = int.from_bytes(header[:4], "big", signed=True)
                value_length = int.from_bytes(header[4:], "big", signed=True)
                key = handle.read(key_length) if key_length >= 0 else None
                value = handle.read(value_length)
                if len(value) < value_length:
                    break
                if value.startswith(ERASED_MARKER) or not matches(key, value):
                    continue
                handle.seek(start + _HEADER_SIZE)
                if key is not None:
                    handle.write(b"-" * len(key))
                marker = ERASED_MARKER if value_length >= len(ERASED_MARKER) else b""
                handle.write(marker.ljust(value_length, b" "))
                handle.flush()
                redacted += 1
            if redacted:
                os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return redacted


def overwritten(value: bytes | None) -> bool:
    """Whether a local log record is one an erasure overwrote."""
    return (
        value is not None
        and value.startswith(ERASED_MARKER)
        and not value[len(ERASED_MARKER) :].strip(b" ")
    )


# --- Apache Kafka ---------------------------------------------------------------------------
def purge_kafka_topic(bootstrap_servers: str, topic: str, matches: Matcher) -> int:
    """Remove the matching records of ``topic`` (see the module's note); how many."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        plans: dict[Any, tuple[int, list[Any]]] = {}
        purged = 0
        for partition in sorted(partitions):
            tp = TopicPartition(topic, partition)
            end, kept, found = _read_partition(consumer, tp, matches)
            if found:
                plans[tp] = (end, kept)
                purged += found
    finally:
        consumer.close()
    if not plans:
        return 0
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", retries=5)
    try:
        sent = [
            producer.send(
                topic, key=m.key, value=m.value, partition=tp.partition, headers=list(m.headers)
            )
            for tp, (_, kept) in plans.items()
            for m in kept
        ]
        producer.flush(timeout=KAFKA_SEND_TIMEOUT_S)
        for future in sent:  # every copy acknowledged before anything is deleted
            future.get(timeout=KAFKA_SEND_TIMEOUT_S)
    finally:
        producer.close(timeout=KAFKA_SEND_TIMEOUT_S)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        admin.delete_records({tp: end for tp, (end, _) in plans.items()})
    finally:
        admin.close()
    return purged


def _read_partition(consumer: Any, tp: Any, matches: Matcher) -> tuple[int, list[Any], int]:
    """(end offset read up to, the records kept, how many matched) of one partition."""
    consumer.assign([tp])
    begin = consumer.beginning_offsets([tp])[tp]
    end = consumer.end_offsets([tp])[tp]
    consumer.seek(tp, begin)
    kept: list[Any] = []
    found = 0
    deadline = time.monotonic() + KAFKA_READ_TIMEOUT_S
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {tp.topic}[{tp.partition}] to offset {end} timed out")
        for message in consumer.poll(timeout_ms=500).get(tp, []):
            if message.offset >= end:
                continue
            if matches(message.key, message.value):
                found += 1
            else:
                kept.append(message)
    return end, kept, found


# --- the offline feature history ------------------------------------------------------------
def purge_offline(where: StoreLocation, customer_id: str) -> int:
    """Rewrite every offline part holding rows of the customer without them; how many rows."""
    removed = 0
    for view in (ACTIVITY_VIEW, PROFILE_VIEW):
        folder = where.offline_dir / view
        for path in sorted(folder.glob("*.parquet")):
            # Row groups whose statistics exclude the id are not even read.
            hits = pq.read_table(
                path, columns=["customer_id"], filters=[("customer_id", "=", customer_id)]
            ).num_rows
            if not hits:
                continue
            table = pq.read_table(path)
            ids = table["customer_id"]
            if pa.types.is_dictionary(ids.type):
                ids = ids.cast(ids.type.value_type)
            write_part(folder, table.filter(pc.not_equal(ids, customer_id)), path.name)
            removed += hits
    return removed
