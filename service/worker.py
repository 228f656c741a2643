"""The stream worker: events in, windowed aggregates out to the Feast online and offline stores.

Per batch: validate every record (invalid ones go to the dead-letter topic with the reason and
their origin), drop duplicate ``event_id``s, fold the events into each customer's per-day
buckets, write the touched customers' features, flush the dead letters, and only then commit the
offsets. A crash anywhere before the commit means redelivery, never loss.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pandas as pd

from feature_repo.aggregates import CustomerWindows
from feature_repo.events import InvalidEvent, parse_event
from service.transport import Consumer, Producer, Record

log = logging.getLogger(__name__)

BATCH_SIZE = 5_000
POLL_TIMEOUT_S = 0.5
FIRST_RECORD_TIMEOUT_S = 30.0


class FeatureWriter(Protocol):
    def write(self, rows: pd.DataFrame) -> None: ...


@dataclass
class WorkerStats:
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    feature_rows: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "feature_rows": self.feature_rows,
            "events_per_second": round(self.events / elapsed, 1) if elapsed > 0 else 0.0,
        }


def dead_letter(record: Record, reason: str) -> bytes:
    return json.dumps(
        {
            "error": InvalidEvent.code,
            "reason": reason,
            "origin": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
            "key": None if record.key is None else record.key.decode("utf-8", "replace"),
            "value": record.value.decode("utf-8", "replace"),
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


class StreamWorker:
    def __init__(
        self,
        consumer: Consumer,
        dlq: Producer,
        dlq_topic: str,
        features: FeatureWriter,
        on_features: Callable[[pd.DataFrame], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.dlq = dlq
        self.dlq_topic = dlq_topic
        self.features = features
        self.on_features = on_features
        self.windows: dict[str, CustomerWindows] = {}
        self.seen: set[str] = set()
        self.stats = WorkerStats()
        self.stopping = threading.Event()

    def process(self, records: list[Record]) -> None:
        touched: set[str] = set()
        dead = 0
        for record in records:
            try:
                event = parse_event(record.value)
            except InvalidEvent as error:
                self.dlq.send(self.dlq_topic, None, dead_letter(record, error.reason))
                dead += 1
                continue
            if event.event_id in self.seen:
                self.stats.duplicates += 1
                continue
            self.seen.add(event.event_id)
            self.windows.setdefault(event.customer_id, CustomerWindows()).add(event)
            touched.add(event.customer_id)
            self.stats.events += 1
        if touched:
            rows = pd.DataFrame(
                [
                    {"customer_id": c, "event_timestamp": w.as_of, **w.features()}
                    for c in sorted(touched)
                    for w in (self.windows[c],)
                ]
            )
            self.features.write(rows)
            self.stats.feature_rows += len(rows)
            if self.on_features is not None:
                self.on_features(rows)
        if dead:
            self.dlq.flush()
            self.stats.dead_letters += dead
        self.consumer.commit(records)
        self.stats.batches += 1

    def run(
        self,
        idle_exit_s: float | None = None,
        max_seconds: float | None = None,
        first_record_timeout_s: float = FIRST_RECORD_TIMEOUT_S,
    ) -> WorkerStats:
        """Consume until stopped.

        With ``idle_exit_s``, also stop once no record has arrived for that long after the
        first one (joining a Kafka consumer group takes a moment, so the wait for the first
        record is ``first_record_timeout_s`` instead).
        """
        started = time.monotonic()
        last_record: float | None = None
        deadline = None if max_seconds is None else started + max_seconds
        while not self.stopping.is_set():
            records = self.consumer.poll(BATCH_SIZE, POLL_TIMEOUT_S)
            now = time.monotonic()
            if records:
                self.process(records)
                last_record = now
            elif idle_exit_s is not None:
                if last_record is not None and now - last_record >= idle_exit_s:
                    break
                if last_record is None and now - started >= first_record_timeout_s:
                    break
            if deadline is not None and now >= deadline:
                break
            if not records:
                # The local log returns at once when empty; do not spin.
                self.stopping.wait(0.05)
        return self.stats

    def stop_on_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())

    def close(self) -> None:
        self.consumer.close()
        self.dlq.close()
