"""Event transport behind one small interface: ``Producer`` and ``Consumer``, with ``Record``
what a consumer reads. The stream worker and the API use only these; the implementations are a
local append-only log (the embedded default, ``service.adapters.local_log``) and Apache Kafka
(``service.adapters.kafka_transport``).

Both are at-least-once: a consumer commits an offset only when told that everything before it is
durably processed, and a restarted consumer resumes from the last commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

EVENTS_TOPIC = "nextbest.events.v1"
DLQ_TOPIC = "nextbest.events.dlq.v1"
ALERTS_TOPIC = "nextbest.alerts.v1"

#: The API's producer: how long a send may wait for the broker (metadata, acknowledgement)
#: before ``POST /v1/events`` answers 503; under the 5 s a client is promised.
API_SEND_TIMEOUT_S = 3.0

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

    def partition_of(self, topic: str, key: str) -> int:
        """The partition a record keyed ``key`` goes to on ``topic``; may raise
        ``TransportError``."""
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

    def partitions(self) -> list[int]:
        """The partitions this consumer owns now (their timers are its to fire)."""
        ...

    def close(self) -> None: ...
