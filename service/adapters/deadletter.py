"""Dead letters: what the stream worker writes for a record that fails for a reason of its own,
and how it tells such a record from a failing dependency.

A dead letter is a JSON document on ``nextbest.events.dlq.v1`` with the reason, the record's
origin (topic, partition, offset), its key, the customer it names (``customer_id``: the id in
the value when it has one, else the key: what an erasure searches for), and the value itself,
cut to ``DEAD_LETTER_VALUE_BYTES`` (an oversize record is never copied whole). Its Kafka key is
the origin, ``topic:partition:offset``: a repeated dead letter of the same record is recognisable
and compacts away, and one record's dead letter can be tombstoned by that key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from service.adapters.transport import Record, TransportError

#: The largest record value the worker reads; a larger one is dead-lettered unread. Kafka's
#: own default for a record is the same 1 MiB, and an event is a few hundred bytes.
MAX_RECORD_BYTES = 1024 * 1024
#: How much of a dead record's value its dead letter keeps (the rest is described by its size
#: and SHA-256): an oversize or hostile record must not be copied whole into the DLQ.
DEAD_LETTER_VALUE_BYTES = 16 * 1024
#: A reason is text for a person; bound it like the value.
REASON_CHARS = 1000
#: The header ``POST /v1/events`` writes on each record: the key (principal) that sent it.
PRINCIPAL_HEADER = "nextbest-principal"


def _dependency_errors() -> tuple[type[BaseException], ...]:
    """Failures of what the worker depends on (stores, broker, disk), never of a record: a
    batch that meets one is retried, not dead-lettered. Anything else raised while processing
    a record is the record's own (see ``service.usecases.stream_isolation``)."""
    import redis.exceptions
    import sqlalchemy.exc
    from kafka.errors import KafkaError

    from service.adapters.features.breaker import OnlineStoreUnavailable

    return (
        OSError,  # sockets, timeouts, a full or read-only disk
        TransportError,
        OnlineStoreUnavailable,
        KafkaError,
        redis.exceptions.RedisError,
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.DisconnectionError,
        sqlalchemy.exc.TimeoutError,
        sqlite3.OperationalError,  # locked, disk I/O
        MemoryError,
    )


DEPENDENCY_ERRORS = _dependency_errors()


def is_dependency_failure(error: BaseException) -> bool:
    return isinstance(error, DEPENDENCY_ERRORS)


def dead_letter_key(record: Record) -> str:
    return f"{record.topic}:{record.partition}:{record.offset}"


def _named_customer(record: Record, text: str | None) -> str | None:
    """The customer a record is about, for finding it again (erasure): the id in its value if
    it has a readable one, else its key."""
    if text is not None:
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("customer_id"), str):
            return str(document["customer_id"])[:256]
    if record.key is None:
        return None
    return record.key.decode("utf-8", "replace")[:256]


def dead_letter(record: Record, reason: str, error: str = "invalid_event") -> bytes:
    """The dead letter of ``record`` (``error``: ``invalid_event``, ``out_of_bounds``,
    ``too_large``, ``tombstone`` or ``processing_failed``)."""
    value = record.value
    kept = None if value is None else value[:DEAD_LETTER_VALUE_BYTES]
    text = None if kept is None else kept.decode("utf-8", "replace")
    whole = value is not None and len(value) <= DEAD_LETTER_VALUE_BYTES
    letter: dict[str, Any] = {
        "error": error,
        "reason": reason[:REASON_CHARS],
        "origin": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
        "key": None if record.key is None else record.key.decode("utf-8", "replace")[:256],
        "customer_id": _named_customer(record, text if whole else None),
        "principal": principal_of(record),
        "value": text,
        "value_bytes": None if value is None else len(value),
        "value_truncated": not whole and value is not None,
        "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(letter).encode()


def principal_of(record: Record) -> str | None:
    """The key that sent a record through ``POST /v1/events`` (None for other producers)."""
    for name, data in record.headers:
        if name == PRINCIPAL_HEADER:
            return data.decode("utf-8", "replace")[:256]
    return None


def refusal(record: Record) -> tuple[str, str] | None:
    """Why a record is dead-lettered before it is parsed: (error, reason), or None."""
    if record.value is None:
        return "tombstone", "a record without a value (tombstone): events are never deleted"
    if len(record.value) > MAX_RECORD_BYTES:
        return "too_large", (
            f"the record's value is {len(record.value)} bytes; at most {MAX_RECORD_BYTES} are read"
        )
    return None
