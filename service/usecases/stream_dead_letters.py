"""The stream's dead letters: queued while a batch is processed, then sent, and acknowledged by
the broker, before the offsets they cover are committed.

A replay does not write dead letters again: the highest offset dead-lettered (and acknowledged)
per partition is kept in a durable store, and records up to it are known to be in the DLQ
already.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.adapters.deadletter import dead_letter, dead_letter_key
from service.adapters.metrics import send_failures
from service.adapters.state import StateStore
from service.adapters.transport import Producer, Record, TransportError

log = logging.getLogger(__name__)


def _partition(record: Record) -> str:
    """The name a partition's dead-letter mark is kept under."""
    return f"{record.topic}:{record.partition}"


class DeadLetterOutbox:
    """Dead letters for ``topic``, sent with ``producer``; ``marks`` keeps, per partition, the
    highest offset whose dead letter is acknowledged (without it, only for this run)."""

    def __init__(self, producer: Producer, topic: str, marks: StateStore | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.marks = marks
        self._marks: dict[str, int] = {}
        self.queued: list[tuple[Record, bytes]] = []  # dead letters not yet acknowledged

    def __len__(self) -> int:
        return len(self.queued)

    def add(self, record: Record, error: str, reason: str) -> bool:
        """Queue the dead letter of ``record``; False if a run before wrote it (a replay)."""
        if record.offset <= self._mark(record):
            return False
        self.queued.append((record, dead_letter(record, reason, error)))
        return True

    def forget_after(self, count: int) -> None:
        """Drop the letters queued after the first ``count`` (their batch comes again, with
        them)."""
        del self.queued[count:]

    def _mark(self, record: Record) -> int:
        name = _partition(record)
        if name not in self._marks:
            stored = self.marks.get_many([name])[0] if self.marks else None
            self._marks[name] = -1 if stored is None else int(stored)
        return self._marks[name]

    def send(
        self, attempts: int, stopping: threading.Event, backoff: Callable[[int], float]
    ) -> int:
        """Send the queued dead letters and wait for the broker to acknowledge them all; then
        remember how far each partition's are written. How many were sent; raises
        ``TransportError`` if they are not acknowledged after ``attempts`` tries (with the
        pause ``backoff`` gives before each next one, cut short by ``stopping``): their
        offsets must not be committed."""
        if not self.queued:
            return 0
        for attempt in range(1, attempts + 1):
            try:
                for record, letter in self.queued:
                    self.producer.send(self.topic, dead_letter_key(record), letter)
                self.producer.flush()
                break
            except TransportError as error:
                log.warning("dead letters not acknowledged (attempt %d): %s", attempt, error)
                send_failures().labels("dead_letter").inc()
                if attempt == attempts or stopping.wait(backoff(attempt)):
                    raise
        upto: dict[str, int] = {}
        for record, _ in self.queued:
            name = _partition(record)
            upto[name] = max(upto.get(name, -1), record.offset)
        if self.marks is not None:
            self.marks.put_many({n: str(o).encode() for n, o in upto.items()})
        self._marks.update(upto)
        sent, self.queued = len(self.queued), []
        return sent

    def close(self) -> None:
        self.producer.close()
        if self.marks is not None:
            self.marks.close()
