"""The stream worker: events in, windowed aggregates out to the Feast online and offline stores.

Per batch (one poll): validate every record (invalid ones, tombstones, oversize ones and events
dated outside the time bounds go to the dead-letter topic with the reason and their origin),
read the touched customers' states, fold the events in (duplicates and events later than the
allowed lateness change nothing; late ones are counted and logged), write the states back
atomically, then the features online, and buffer them for the offline store. Offsets are
committed only after the offline buffer and the dead letters are durably written (the dead
letters acknowledged by the broker) — every few seconds and at shutdown. A crash, or a
rebalance, means redelivery, and redelivered events are recognised by their ids: at-least-once
delivery, exactly-once effect.

Poison isolation: an exception raised while processing valid events is either a dependency's
failure (``service.adapters.deadletter.DEPENDENCY_ERRORS``: the batch is retried a few times, then
the worker stops uncommitted, to be restarted) or the fault of some record in the batch: the batch
is split in halves until the record that fails alone is found; it is dead-lettered with the
error and the rest is processed. The partition always moves on.

A replay does not write dead letters again: the highest offset dead-lettered (and acknowledged)
per partition is kept in a durable store, and records up to it are known to be in the DLQ
already.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from consent.stores.erasure import Erased, ErasureRegister, candidate_ids
from consent.stores.registry import ConsentRegistry, recorder
from feature_repo.aggregates import (
    DEFAULT_LATENESS_US,
    WindowState,
    apply_events,
    compute_features,
)
from feature_repo.events import ConsentChangedEvent, Event, InvalidEvent, TimeBounds, parse_event
from service.adapters.deadletter import (
    dead_letter,
    dead_letter_key,
    is_dependency_failure,
    principal_of,
    refusal,
)
from service.adapters.erasure_purge import overwritten
from service.adapters.features import OfflineBuffer, OnlineWriter
from service.adapters.metrics import StreamMetrics, send_failures
from service.adapters.state import StateStore
from service.adapters.transport import Consumer, Producer, Record, TransportError
from service.usecases.consent_writes import stream_entries
from service.usecases.origin import Origin

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
#: A batch that meets a failing dependency (store, broker) is tried this many times, with a
#: growing pause (about 15 s in all: well within the poll interval the group allows), before
#: the worker stops without committing it. Dead letters are sent as often before that.
DEPENDENCY_ATTEMPTS = 5


def _backoff(attempt: int) -> float:
    return min(0.5 * 2**attempt, 8.0)


def _partition(record: Record) -> str:
    """The name a partition's dead-letter mark is kept under."""
    return f"{record.topic}:{record.partition}"


class Parsed(NamedTuple):
    record: Record
    event: Event

    @property
    def sender(self) -> str | None:
        """``<role>:<key name>`` of the API key that sent the event (``POST /v1/events``), or
        None."""
        principal = principal_of(self.record)
        if principal is None:
            return None
        try:
            who = json.loads(principal)
            return recorder(str(who["role"]), str(who["name"]))
        except (ValueError, TypeError, KeyError):
            return None


@dataclass
class WorkerStats:
    events: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    #: Records a replay met again that were dead-lettered before (not written twice).
    dead_letters_known: int = 0
    batches: int = 0
    feature_rows: int = 0
    commits: int = 0
    consents: int = 0
    erased: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        return {
            "events": self.events,
            "duplicates": self.duplicates,
            "late": self.late,
            "dead_letters": self.dead_letters,
            "dead_letters_known": self.dead_letters_known,
            "batches": self.batches,
            "feature_rows": self.feature_rows,
            "commits": self.commits,
            "consents": self.consents,
            "erased": self.erased,
            "events_per_second": round(self.events / elapsed, 1) if elapsed > 0 else 0.0,
        }


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
        erasures: ErasureRegister | None = None,
        time_bounds: TimeBounds | None = None,
        dead_marks: StateStore | None = None,
    ) -> None:
        #: Customers who were erased: their events are dropped (``_without_erased``).
        self.erasures = erasures
        self._written: set[str] = set()  # customers the current batch writes
        self._batch_erased = Erased(b"", frozenset())  # the register as the batch began
        #: Told which customers' features each batch wrote, and the event that last changed
        #: them (the alerter: ``service.usecases.alert_runner``).
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
        #: The pause before the n-th try again after a dependency failed.
        self.backoff: Callable[[int], float] = _backoff
        #: Events dated outside these bounds of the server's clock are dead-lettered.
        self.time_bounds = time_bounds or TimeBounds()
        #: Per partition, the highest offset whose dead letter is acknowledged (durable when
        #: given a store: then a replay does not write the dead letters again).
        self.dead_marks = dead_marks
        self._marks: dict[str, int] = {}
        self._pending: list[Record] = []  # processed, not yet committed (last per partition)
        self._dead: list[tuple[Record, bytes]] = []  # dead letters not yet acknowledged
        self._last_flush = time.monotonic()
        self._last_lag = 0.0

    # --- one batch ------------------------------------------------------------------------
    def process(self, records: list[Record]) -> None:
        began = time.monotonic()
        queued = len(self._dead)
        self._batch_erased = self._erased()
        try:
            parsed = self._without_erased(self._parse(records))
            consents = [p for p in parsed if isinstance(p.event, ConsentChangedEvent)]
            behaviour = [p for p in parsed if not isinstance(p.event, ConsentChangedEvent)]
            self._isolated(self._consent_step, consents)
            self._isolated(self._feature_step, behaviour)
            self._undo_erased_meanwhile(self._batch_erased)
        except BaseException:
            del self._dead[queued:]  # the batch comes again, with its dead letters
            raise
        self._pending.extend(records)
        self.stats.batches += 1
        if self.metrics:
            self.metrics.batches.inc()
            self.metrics.batch_seconds.observe(time.monotonic() - began)

    def _parse(self, records: list[Record]) -> list[Parsed]:
        """The records' events; the others are dead-lettered with the reason."""
        parsed: list[Parsed] = []
        now = datetime.now(UTC)
        for record in records:
            refused = refusal(record)
            if refused is None:
                try:
                    event = parse_event(record.value)  # type: ignore[arg-type]
                except InvalidEvent as error:
                    refused = (InvalidEvent.code, error.reason)
                except Exception as error:  # the parser choked on these bytes
                    if is_dependency_failure(error):
                        raise
                    refused = (InvalidEvent.code, f"unreadable: {type(error).__name__}")
                else:
                    violation = self.time_bounds.violation(event.occurred_at, now)
                    if violation is None:
                        parsed.append(Parsed(record, event))
                        continue
                    refused = ("out_of_bounds", f"occurred_at: {violation}")
            self._dead_letter(record, *refused)
        return parsed

    def _isolated(self, step: Callable[[list[Parsed]], None], items: list[Parsed]) -> None:
        """Run ``step`` on ``items``; if it fails for a reason that is not a dependency's,
        split the items until the record that fails alone is found, dead-letter it with the
        error, and run the step on the rest. Steps are idempotent for what they did before
        failing (event ids, a consent batch in one transaction), so running a half again is
        safe."""
        if not items:
            return
        try:
            step(items)
        except Exception as error:
            if is_dependency_failure(error):
                raise
            if len(items) == 1:
                record = items[0].record
                log.warning(
                    "record %s failed alone and is dead-lettered: %s: %s",
                    dead_letter_key(record),
                    type(error).__name__,
                    error,
                )
                self._dead_letter(record, "processing_failed", f"{type(error).__name__}: {error}")
                return
            middle = len(items) // 2
            self._isolated(step, items[:middle])
            self._isolated(step, items[middle:])

    def _consent_step(self, items: list[Parsed]) -> None:
        self._record_consents([(p.event, p.sender) for p in items])

    def _feature_step(self, items: list[Parsed]) -> None:
        events = [p.event for p in items]
        origins = {
            p.event.customer_id: Origin(
                p.event.event_id, p.record.topic, p.record.partition, p.record.offset
            )
            for p in items
        }
        customers = list(dict.fromkeys(e.customer_id for e in events))
        blobs = self.states.get_many(customers)
        states = {
            c: WindowState.from_bytes(b) if b is not None else WindowState()
            for c, b in zip(customers, blobs, strict=True)
        }
        ceiling = datetime.now(UTC) + self.time_bounds.ahead
        applied = apply_events(
            states, events, self.lateness_us, round(ceiling.timestamp() * 1_000_000)
        )
        if applied.late_events:
            first = applied.late_events[0]
            log.warning(
                "%d event(s) later than the allowed lateness were not applied (first: %s of %s)",
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

    # --- dead letters ---------------------------------------------------------------------
    def _dead_letter(self, record: Record, error: str, reason: str) -> None:
        """Queue the dead letter of ``record``, unless a run before wrote it (a replay) or it
        belongs to an erased customer (a letter would keep their data)."""
        if self._names_erased(record):
            return
        if record.offset <= self._mark(record):
            self.stats.dead_letters_known += 1
            return
        self._dead.append((record, dead_letter(record, reason, error)))

    def _mark(self, record: Record) -> int:
        name = _partition(record)
        if name not in self._marks:
            stored = self.dead_marks.get_many([name])[0] if self.dead_marks else None
            self._marks[name] = -1 if stored is None else int(stored)
        return self._marks[name]

    def _send_dead_letters(self) -> None:
        """Send the queued dead letters and wait for the broker to acknowledge them all; then
        remember how far each partition's are written. Raises ``TransportError`` if they are
        not acknowledged after ``DEPENDENCY_ATTEMPTS`` tries: their offsets must not be
        committed."""
        if not self._dead:
            return
        for attempt in range(1, DEPENDENCY_ATTEMPTS + 1):
            try:
                for record, letter in self._dead:
                    self.dlq.send(self.dlq_topic, dead_letter_key(record), letter)
                self.dlq.flush()
                break
            except TransportError as error:
                log.warning("dead letters not acknowledged (attempt %d): %s", attempt, error)
                send_failures().labels("dead_letter").inc()
                if attempt == DEPENDENCY_ATTEMPTS or self.stopping.wait(self.backoff(attempt)):
                    raise
        upto: dict[str, int] = {}
        for record, _ in self._dead:
            name = _partition(record)
            upto[name] = max(upto.get(name, -1), record.offset)
        if self.dead_marks is not None:
            self.dead_marks.put_many({n: str(o).encode() for n, o in upto.items()})
        self._marks.update(upto)
        self.stats.dead_letters += len(self._dead)
        if self.metrics:
            self.metrics.events.labels("dead_letter").inc(len(self._dead))
        self._dead = []

    # --- erased customers: dropped, counted, never dead-lettered (a letter keeps their data) -
    def _erased(self) -> Erased:
        """The erasure register now (read before a batch and again after its writes)."""
        return self.erasures.current() if self.erasures is not None else Erased(b"", frozenset())

    def _names_erased(self, record: Record) -> bool:
        """Whether a record about to be dead-lettered belongs to an erased customer, by its key (the
        contract's customer id) or a ``customer_id`` in its text, or is one of theirs that an
        erasure overwrote in the local log: then it is dropped, so a replay does not
        dead-letter their data (or the marker) again."""
        erased = self._batch_erased
        if not overwritten(record.value) and (
            not erased or not erased.among(candidate_ids(record.key, record.value))
        ):
            return False
        self._count_erased(1)
        return True

    def _without_erased(self, parsed: list[Parsed]) -> list[Parsed]:
        """``parsed`` without the events (consent events too) of erased customers, whatever
        their record's key: a replay from any offset never brings them back."""
        self._written = {p.event.customer_id for p in parsed}
        gone = self._batch_erased.among(self._written)
        if not gone:
            return parsed
        self._written -= gone
        kept = [p for p in parsed if p.event.customer_id not in gone]
        self._count_erased(len(parsed) - len(kept))
        return kept

    def _undo_erased_meanwhile(self, before: Erased) -> None:
        """An erasure committed while this batch was written: undo what the batch wrote of
        that customer (the erasure deleted what was there before; it cannot see this)."""
        now = self._erased()
        if now is before or not self._written:
            return
        gone = now.among(self._written)
        for customer in gone:
            self.online.erase(customer)
            self.states.delete(customer)
        if gone:
            self.offline.drop(gone)
            if self.consents is not None:
                with self.consents.engine.begin() as connection:
                    for customer in gone:
                        ConsentRegistry.erase(connection, customer)
            log.info("undid a batch's writes for %d customer(s) erased meanwhile", len(gone))

    def _count_erased(self, dropped: int) -> None:
        self.stats.erased += dropped
        if self.metrics:
            self.metrics.events.labels("erased").inc(dropped)

    def _record_consents(self, events: list[tuple[Event, str | None]]) -> None:
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
        """Write the dead letters (acknowledged) and the offline buffer durably, then commit
        what they cover. Raises, committing nothing, if the dead letters are not written."""
        self._send_dead_letters()
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
                    self._process_retrying(records)
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

    def _process_retrying(self, records: list[Record]) -> None:
        """``process``, tried again while a dependency fails (processing a batch twice changes
        nothing: event ids); after ``DEPENDENCY_ATTEMPTS`` the failure stops the worker."""
        for attempt in range(1, DEPENDENCY_ATTEMPTS + 1):
            try:
                self.process(records)
                return
            except Exception as error:
                if not is_dependency_failure(error) or attempt == DEPENDENCY_ATTEMPTS:
                    raise
                log.warning("a dependency failed (attempt %d): %s", attempt, error)
                if self.stopping.wait(self.backoff(attempt)):
                    raise

    def close(self) -> None:
        self.consumer.close()
        self.dlq.close()
        self.states.close()
        if self.dead_marks is not None:
            self.dead_marks.close()
