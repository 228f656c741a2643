"""The stream worker: events in, windowed aggregates out to the Feast online and offline stores.

Per batch (one poll): validate every record (invalid ones, tombstones, oversize ones and events
dated outside the time bounds go to the dead-letter topic with the reason and their origin:
``stream_validation``), drop erased customers' events (``stream_erasure``), record consent
choices, and fold the other events into the touched customers' states, written back atomically,
then the features online and buffered for the offline store (``stream_features``). Offsets are
committed only after the offline buffer and the dead letters are durably written (the dead
letters acknowledged by the broker: ``stream_dead_letters``) — every few seconds and at
shutdown. A crash, or a rebalance, means redelivery, and redelivered events are recognised by
their ids: at-least-once delivery, exactly-once effect.

An exception raised while processing valid events is either a dependency's failure
(``service.adapters.deadletter.DEPENDENCY_ERRORS``: the batch is retried a few times, then the
worker stops uncommitted, to be restarted) or the fault of some record in the batch, found and
dead-lettered by ``stream_isolation``.

Between polls the timers due fire (``stream_timer_rounds``): quiet customers' rows move to each
midnight as if an event had come.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from consent.stores.erasure import ErasureRegister
from consent.stores.outcomes import OutcomeEvents
from consent.stores.registry import ConsentRegistry
from feature_repo.arrival import DEFAULT_LATENESS_US, epoch_micros
from feature_repo.events import ConsentChangedEvent, Event, TimeBounds
from service.adapters.deadletter import is_dependency_failure
from service.adapters.features.offline import OfflineBuffer
from service.adapters.features.writers import OnlineWriter
from service.adapters.metrics import StreamMetrics
from service.adapters.state import HoldingStates, StateStore
from service.adapters.transport import Consumer, Producer, Record
from service.usecases.consent_writes import stream_entries
from service.usecases.origin import Origin, TimerOrigin
from service.usecases.score_keeping import forget_withdrawn
from service.usecases.stream_dead_letters import DeadLetterOutbox
from service.usecases.stream_erasure import ErasedOnStream
from service.usecases.stream_features import write_features
from service.usecases.stream_isolation import isolated
from service.usecases.stream_outcomes import outcomes_of
from service.usecases.stream_stats import WorkerStats, count_batch
from service.usecases.stream_timer_rounds import (
    TIMER_BUDGET_BUSY_S,
    TIMER_BUDGET_IDLE_S,
    TimerRounds,
)
from service.usecases.stream_timers import StreamTimers
from service.usecases.stream_validation import Parsed, parse_records

log = logging.getLogger(__name__)

#: At most this many records per batch: large batches when behind (one write per customer
#: covers several of its events), small ones when keeping up (fresh features).
BATCH_SIZE = 20_000
POLL_TIMEOUT_S = 0.1
#: Joining a group may wait for dead members' sessions to time out (see transport).
FIRST_RECORD_TIMEOUT_S = 90.0
#: The offline buffer is written (and offsets committed) at least this often...
FLUSH_INTERVAL_S = 2.0
#: ...or when it holds this many rows: writing a part holds the events up, so parts stay small
#: enough (timers catching up add a row per customer and midnight) to keep that short.
FLUSH_ROWS = 25_000
#: How often the consumer lag is measured (it costs a request to the broker).
LAG_INTERVAL_S = 5.0
#: Committing may fail while the broker is away; the worker keeps going and retries.
COMMIT_ATTEMPTS = 5
#: A batch that meets a failing dependency (store, broker) is tried this many times, with a
#: growing pause (about 15 s in all: well within the poll interval the group allows), before
#: the worker stops without committing it. Dead letters are sent as often before that.
DEPENDENCY_ATTEMPTS = 5


def _backoff(attempt: int) -> float:
    return min(0.5 * 2.0**attempt, 8.0)


class StreamWorker(TimerRounds):
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
        on_features: Callable[[Mapping[str, Origin | TimerOrigin | None]], None] | None = None,
        erasures: ErasureRegister | None = None,
        time_bounds: TimeBounds | None = None,
        dead_marks: StateStore | None = None,
        timers: StreamTimers | None = None,
        outcomes: OutcomeEvents | None = None,
    ) -> None:
        #: Customers who were erased: their events are dropped.
        self.erased = ErasedOnStream(erasures)
        #: Told which customers' features each batch wrote, and the event that last changed
        #: them (the alerter: ``service.usecases.alert_runner``).
        self.on_features = on_features
        self.consumer = consumer
        self.consents = consents
        #: Where outcomes for the lift report are kept (applications, complaints, opt-outs).
        self.outcomes = outcomes
        #: Per partition, the highest offset whose dead letter is acknowledged is kept (durable
        #: when given ``dead_marks``: then a replay does not write the dead letters again).
        self.dead_letters = DeadLetterOutbox(dlq, dlq_topic, dead_marks)
        #: States moved by timers are held until their offline rows are durable.
        self.states = HoldingStates(states)
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
        #: Each customer's next change with no new event (None: features move only with
        #: events, as before timers).
        self.timers = timers
        self._pending: list[Record] = []  # processed, not yet committed (last per partition)
        self._last_flush = time.monotonic()
        self._last_lag = 0.0

    # --- one batch ------------------------------------------------------------------------
    def process(self, records: list[Record]) -> None:
        began = time.monotonic()
        queued = len(self.dead_letters)
        self.erased.begin_batch()
        try:
            valid = parse_records(records, self.time_bounds, self._dead_letter)
            parsed = self.erased.without_erased(valid)
            self._count_erased(len(valid) - len(parsed))
            consents = [p for p in parsed if isinstance(p.event, ConsentChangedEvent)]
            behaviour = [p for p in parsed if not isinstance(p.event, ConsentChangedEvent)]
            isolated(self._consent_step, consents, self._dead_letter)
            isolated(self._feature_step, behaviour, self._dead_letter)
            if self.outcomes is not None:
                isolated(self._outcome_step, parsed, self._dead_letter)
            self.erased.undo_erased_meanwhile(self.online, self.states, self.offline, self.consents)
        except BaseException:
            self.dead_letters.forget_after(queued)  # the batch comes again, with its dead letters
            raise
        self._pending.extend(records)
        self.stats.batches += 1
        if self.metrics:
            self.metrics.batches.inc()
            self.metrics.batch_seconds.observe(time.monotonic() - began)

    def _consent_step(self, items: list[Parsed]) -> None:
        self._record_consents([(p.event, p.sender) for p in items])

    def _outcome_step(self, items: list[Parsed]) -> None:
        assert self.outcomes is not None
        self.outcomes.record(outcomes_of(p.event for p in items))

    def _feature_step(self, items: list[Parsed]) -> None:
        done = write_features(
            items, self.states, self.online, self.offline, self.lateness_us, self.time_bounds.ahead
        )
        applied, written = done.applied, done.customers
        count_batch(self.stats, self.metrics, applied, len(written), done.as_of_us)
        if self.timers is not None:
            self.timers.note(done.timers)
            for item in items:
                self.timers.observe(item.record.partition, epoch_micros(item.event.occurred_at))
        if self.on_features is not None and written:
            self.on_features({c: done.origins[c] for c in written if c in done.origins})

    # --- dead letters, and erased customers' records (dropped, never dead-lettered) ----------
    def _dead_letter(self, record: Record, error: str, reason: str) -> None:
        """Queue the dead letter of ``record``, unless a run before wrote it (a replay) or it
        belongs to an erased customer (a letter would keep their data)."""
        if self.erased.names_erased(record):
            self._count_erased(1)
            return
        if not self.dead_letters.add(record, error, reason):
            self.stats.dead_letters_known += 1

    def _count_erased(self, dropped: int) -> None:
        if not dropped:
            return
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
        forget_withdrawn(self.online, entries)

    # --- durability -----------------------------------------------------------------------
    def flush_and_commit(self) -> None:
        """Write the dead letters (acknowledged) and the offline buffer durably, then commit
        what they cover. Raises, committing nothing, if the dead letters are not written."""
        sent = self.dead_letters.send(DEPENDENCY_ATTEMPTS, self.stopping, self.backoff)
        if sent:
            self.stats.dead_letters += sent
            if self.metrics:
                self.metrics.events.labels("dead_letter").inc(sent)
        self.offline.flush()
        # The held states' rows are durable now; then the timers their rows and states cover.
        if self._store_states() and self.timers is not None:
            self.timers.store()
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

    def _store_states(self) -> bool:
        """Store the states held; False if the store failed (they stay held, and the timers
        are not stored either: tried again at the next flush)."""
        try:
            stored = self.states.flush()
        except Exception as error:
            if not is_dependency_failure(error):
                raise
            log.warning("held states not stored, tried again at the next flush: %s", error)
            return False
        # An erasure committed since those timers fired: her state must not outlive it.
        for customer in self.erased.current().among(stored) if stored else ():
            self.states.delete(customer)
        return True

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
                elif self.timers is not None:
                    self.timers.caught_up(self.consumer.partitions())
                self.fire_timers(budget_s=TIMER_BUDGET_BUSY_S if records else TIMER_BUDGET_IDLE_S)
                if self.timers is not None:
                    self.timers.publish(self.consumer.partitions())
                self._maybe_flush()
                self._maybe_measure_lag()
                if not records and idle_exit_s is not None:
                    if last_record is not None and now - last_record >= idle_exit_s:
                        self._fire_all_due()
                        break
                    if last_record is None and now - started >= first_record_timeout_s:
                        # Says whether the group gave this worker anything to read: an empty
                        # topic and a stalled group join look alike from here.
                        log.warning(
                            "no record within %.0f s; partitions assigned: %s",
                            first_record_timeout_s,
                            self.consumer.partitions(),
                        )
                        break
                if deadline is not None and now >= deadline:
                    break
                if not records and not (self.timers is not None and self.timers.behind):
                    # The local log returns at once when empty; do not spin.
                    self.stopping.wait(0.02)
        finally:
            self.flush_and_commit()
        return self.stats

    def drain(self) -> int:
        """Process what is on the transport now, fire every timer due by the clock, write and
        commit: one step of a simulation that moves the clock itself (on the local log, where a
        poll finds everything there is at once). Returns how many records it processed."""
        done = 0
        while records := self.consumer.poll(BATCH_SIZE, POLL_TIMEOUT_S):
            self._process_retrying(records)
            done += len(records)
        if self.timers is not None:
            self.timers.caught_up(self.consumer.partitions())
        self._fire_all_due()
        return done

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

    def reset_state(self) -> None:
        """Forget every customer's state and timers (a replay rebuilds them)."""
        self.states.clear()
        if self.timers is not None:
            self.timers.index.clear()

    def close(self) -> None:
        self.consumer.close()
        self.dead_letters.close()
        self.states.close()
        if self.timers is not None:
            self.timers.index.close()
            if self.timers.sink is not None:
                self.timers.sink.close()
