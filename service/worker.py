"""The stream worker: events in, windowed aggregates out to the Feast online and offline stores.

Per batch (one poll): validate every record (invalid ones go to the dead-letter topic with the
reason and their origin), read the touched customers' states, fold the events in (duplicates
and events later than the allowed lateness change nothing; late ones are counted and logged),
write the states back atomically, then the features online, and buffer them for the offline
store. Offsets are committed only after the offline buffer (and the dead letters) are durably
written — every few seconds and at shutdown. A crash, or a rebalance,
means redelivery, and redelivered events are recognised by their ids: at-least-once
delivery, exactly-once effect.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from consent.registry import ConsentRegistry
from feature_repo.aggregates import (
    DEFAULT_LATENESS_US,
    WindowState,
    apply_events,
    compute_features,
)
from feature_repo.events import ConsentChangedEvent, Event, InvalidEvent, parse_event
from service.consent_writes import stream_entries
from service.features import OfflineBuffer, OnlineWriter
from service.metrics import StreamMetrics
from service.origin import Origin
from service.state import StateStore
from service.transport import Consumer, Producer, Record

log = logging.getLogger(__name__)

#: At most this many records per batch: large batches when behind (one write per customer
#: covers several of its events), small ones when keeping up (fresh features).
BATCH_SIZE = 20_000
POLL_TIMEOUT_S = 0.1
#: Joining a group may wait for dead members' sessions to time out (see transport).
FIRST_RECORD_TIMEOUT_S = 90.0
#: The offline buffer is written (and offsets committed) at least this often...
FLUSH_INTERVAL_S = 2.0
#: ...or when it holds this many rows.
FLUSH_ROWS = 200_000
#: How often the consumer lag is measured (it costs a request to the broker).
LAG_INTERVAL_S = 5.0
#: Committing may fail while the broker is away; the worker keeps going and retries.
COMMIT_ATTEMPTS = 5


@dataclass
class WorkerStats:
    events: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    batches: int = 0
    feature_rows: int = 0
    commits: int = 0
    consents: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "late": self.late,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "feature_rows": self.feature_rows,
            "commits": self.commits,
            "consents": self.consents,
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
        states: StateStore,
        online: OnlineWriter,
        offline: OfflineBuffer,
        lateness_us: int = DEFAULT_LATENESS_US,
        metrics: StreamMetrics | None = None,
        consents: ConsentRegistry | None = None,
        on_features: Callable[[dict[str, Origin]], None] | None = None,
    ) -> None:
        #: Told which customers' features each batch wrote, and the event that last changed
        #: them (the alerter: ``service.alerts``).
        self.on_features = on_features
        self.consumer = consumer
        self.consents = consents
        self.dlq = dlq
        self.dlq_topic = dlq_topic
        self.states = states
        self.online = online
        self.offline = offline
        self.lateness_us = lateness_us
        self.metrics = metrics
        self.stats = WorkerStats()
        self.stopping = threading.Event()
        self._pending: list[Record] = []  # processed, not yet committed (last per partition)
        self._dead_unflushed = 0
        self._last_flush = time.monotonic()
        self._last_lag = 0.0

    # --- one batch ------------------------------------------------------------------------
    def process(self, records: list[Record]) -> None:
        began = time.monotonic()
        events: list[Event] = []
        origins: dict[str, Origin] = {}
        for record in records:
            try:
                event = parse_event(record.value)
                events.append(event)
                if self.on_features is not None:
                    origins[event.customer_id] = Origin(
                        event.event_id, record.topic, record.partition, record.offset
                    )
            except InvalidEvent as error:
                self.dlq.send(self.dlq_topic, None, dead_letter(record, error.reason))
                self._dead_unflushed += 1
        self._record_consents(events)
        events = [e for e in events if not isinstance(e, ConsentChangedEvent)]
        customers = list(dict.fromkeys(e.customer_id for e in events))
        if customers:
            blobs = self.states.get_many(customers)
            states = {
                c: WindowState.from_bytes(b) if b is not None else WindowState()
                for c, b in zip(customers, blobs, strict=True)
            }
            applied = apply_events(states, events, self.lateness_us)
            if applied.late_events:
                first = applied.late_events[0]
                log.warning(
                    "%d event(s) later than the allowed lateness were not applied "
                    "(first: %s of %s)",
                    applied.late,
                    first[0],
                    first[1],
                )
            written = [c for c in customers if states[c].as_of_us is not None]
            self.states.put_many({c: states[c].to_bytes() for c in written})
            ordered = [states[c] for c in written]
            matrix = compute_features(ordered)
            as_of_us = np.fromiter((s.as_of_us for s in ordered), np.int64, len(ordered))
            self.online.write(written, as_of_us, matrix)
            self.offline.add(written, as_of_us, matrix)
            self._count(applied.applied, applied.duplicates, applied.late, len(written), as_of_us)
            if self.on_features is not None and written:
                self.on_features({c: origins[c] for c in written if c in origins})
        self._pending.extend(records)
        self.stats.batches += 1
        if self.metrics:
            self.metrics.batches.inc()
            self.metrics.batch_seconds.observe(time.monotonic() - began)

    def _record_consents(self, events: list[Event]) -> None:
        """Consent choices go to the registry before their offsets can be committed; if the
        write fails the batch is not committed, so nothing is lost. The bank records them now
        (``recorded_at``, what orders the history), the event's own time is kept as when the
        customer gave them, and each event is recorded once: a redelivery or a replay from an
        old offset cannot record an old grant again, after (and so over) a later withdrawal."""
        entries = stream_entries(events, datetime.now(UTC))
        if not entries:
            return
        if self.consents is None:
            raise RuntimeError("consent events on the stream but no consent registry is wired")
        self.stats.consents += self.consents.record(entries)

    def _count(
        self, applied: int, duplicates: int, late: int, rows: int, as_of_us: np.ndarray
    ) -> None:
        self.stats.events += applied
        self.stats.duplicates += duplicates
        self.stats.late += late
        self.stats.feature_rows += rows
        if self.metrics:
            self.metrics.events.labels("applied").inc(applied)
            self.metrics.events.labels("duplicate").inc(duplicates)
            self.metrics.events.labels("late").inc(late)
            self.metrics.feature_rows.inc(rows)
            now_us = time.time() * 1e6
            for age in (now_us - as_of_us[-100:]) / 1e6:  # a sample keeps this cheap
                self.metrics.freshness.observe(max(age, 0.0))

    # --- durability -----------------------------------------------------------------------
    def flush_and_commit(self) -> None:
        """Write the offline buffer and dead letters durably, then commit what they cover."""
        if self._dead_unflushed:
            self.dlq.flush()
            self.stats.dead_letters += self._dead_unflushed
            if self.metrics:
                self.metrics.events.labels("dead_letter").inc(self._dead_unflushed)
            self._dead_unflushed = 0
        self.offline.flush()
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self.consumer.commit(pending)
                break
            except Exception as error:  # the broker may be restarting
                log.warning("commit failed (attempt %d): %s", attempt, error)
                if attempt == COMMIT_ATTEMPTS:
                    # Not committing means redelivery, which changes nothing: safe to go on.
                    log.error("giving up this commit; its records will be redelivered")
                    return
                self.stopping.wait(min(0.2 * 2**attempt, 5.0))
        self.stats.commits += 1
        if self.metrics:
            self.metrics.commits.inc()

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S
        if due or self.offline.rows >= FLUSH_ROWS:
            self.flush_and_commit()

    def _maybe_measure_lag(self) -> None:
        if self.metrics is None or time.monotonic() - self._last_lag < LAG_INTERVAL_S:
            return
        self._last_lag = time.monotonic()
        try:
            for partition, lag in self.consumer.lag().items():
                self.metrics.lag.labels(str(partition)).set(lag)
        except Exception as error:
            log.debug("lag not measured: %s", error)

    # --- the loop -------------------------------------------------------------------------
    def run(
        self,
        idle_exit_s: float | None = None,
        max_seconds: float | None = None,
        first_record_timeout_s: float = FIRST_RECORD_TIMEOUT_S,
    ) -> WorkerStats:
        """Consume until stopped (then flush, commit and leave the group).

        With ``idle_exit_s``, also stop once no record has arrived for that long after the
        first one (joining a Kafka consumer group takes a moment, so the wait for the first
        record is ``first_record_timeout_s`` instead).
        """
        started = time.monotonic()
        last_record: float | None = None
        deadline = None if max_seconds is None else started + max_seconds
        try:
            while not self.stopping.is_set():
                records = self.consumer.poll(BATCH_SIZE, POLL_TIMEOUT_S)
                now = time.monotonic()
                if records:
                    self.process(records)
                    last_record = now
                self._maybe_flush()
                self._maybe_measure_lag()
                if not records and idle_exit_s is not None:
                    if last_record is not None and now - last_record >= idle_exit_s:
                        break
                    if last_record is None and now - started >= first_record_timeout_s:
                        break
                if deadline is not None and now >= deadline:
                    break
                if not records:
                    # The local log returns at once when empty; do not spin.
                    self.stopping.wait(0.02)
        finally:
            self.flush_and_commit()
        return self.stats

    def close(self) -> None:
        self.consumer.close()
        self.dlq.close()
        self.states.close()
