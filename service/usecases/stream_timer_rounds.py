"""The stream worker's timer rounds (``StreamWorker`` mixes them in): the timers due on its
partitions fire in rounds that share the worker's time with the events (see
``stream_timers`` for when a timer is due and how big a round is)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from feature_repo.buckets import DAY_US
from service.adapters.deadletter import is_dependency_failure
from service.adapters.features.offline import OfflineBuffer
from service.adapters.features.writers import OnlineWriter
from service.adapters.metrics import StreamMetrics
from service.adapters.state import HoldingStates
from service.adapters.timers import Timer, TimerChange
from service.adapters.transport import Consumer
from service.usecases.origin import Origin, TimerOrigin
from service.usecases.stream_erasure import ErasedOnStream
from service.usecases.stream_features import advance_features
from service.usecases.stream_stats import WorkerStats
from service.usecases.stream_timers import StreamTimers

log = logging.getLogger(__name__)

#: After a poll that brought records, timers get this long (events should not wait behind a
#: midnight's timers or a catch-up's); after an empty poll, this long. While timers are left
#: over, the worker does not pause between polls, so a quiet stream fires them nearly back to
#: back.
TIMER_BUDGET_BUSY_S = 0.03
TIMER_BUDGET_IDLE_S = 0.1


class TimerRounds:
    """Firing the due timers; the worker provides what the rounds write through."""

    timers: StreamTimers | None
    consumer: Consumer
    states: HoldingStates
    online: OnlineWriter
    offline: OfflineBuffer
    erased: ErasedOnStream
    stats: WorkerStats
    metrics: StreamMetrics | None
    on_features: Callable[[Mapping[str, Origin | TimerOrigin | None]], None] | None

    def flush_and_commit(self) -> None:
        raise NotImplementedError

    def fire_timers(self, force: bool = False, budget_s: float = TIMER_BUDGET_IDLE_S) -> int:
        """Fire the timers due on this worker's partitions, in rounds for about ``budget_s``
        (at least one round): the customers' features move through their midnights by the
        event path's writes. A dependency's failure leaves them due for the next round; a
        customer whose state cannot be advanced is logged and her timer tried again at the next
        midnight (her next event arms it anew), so she cannot stop the others. ``force``: look
        now, not at the next check. Returns how many fired."""
        if self.timers is None:
            return 0
        fired = 0
        deadline = time.monotonic() + budget_s
        while True:
            if self.timers.unstored >= self.timers.batch:
                self.flush_and_commit()
            partitions = self.consumer.partitions()
            size = self.timers.round_size(deadline - time.monotonic())
            due = self.timers.due(partitions, force, size)
            if not due:
                return fired
            began = time.monotonic()
            upto = self.timers.owned(partitions)
            try:
                self._advance(due, upto)
            except Exception as error:
                if is_dependency_failure(error):
                    log.warning("timers not fired, tried again next round: %s", error)
                    return fired
                for timer in due:
                    self._advance_alone(timer, upto)
            self.timers.took(len(due), time.monotonic() - began)
            fired += len(due)
            if self.metrics:
                lag = max(upto[due[0].partition] - due[0].due_us, 0) / 1e6
                self.metrics.timer_lag.set(lag)
            if time.monotonic() >= deadline:
                return fired

    def _fire_all_due(self) -> None:
        """Caught up: every timer due by now is fired (the ones the last batches armed are
        stored first), so a run that ends leaves every customer's row as of now."""
        self.flush_and_commit()
        while self.fire_timers(force=True):
            self.flush_and_commit()
        if self.timers is not None:
            self.timers.publish(self.consumer.partitions(), force=True)

    def _advance(self, due: list[Timer], upto: dict[int, int]) -> None:
        assert self.timers is not None
        # An erased customer's timer is only cancelled: nothing of hers is written again.
        gone = self.erased.current().among(t.customer for t in due)
        if gone:
            self.timers.note(
                [
                    TimerChange(t.partition, t.customer, None, t.due_us)
                    for t in due
                    if t.customer in gone
                ]
            )
            due = [t for t in due if t.customer not in gone]
        fired = advance_features(due, upto, self.states, self.online, self.offline)
        self.timers.note(fired.timers)
        self.stats.timers_fired += len(due)
        self.stats.feature_rows += len(fired.customers)
        if self.metrics:
            cancelled = sum(1 for t in fired.timers if t.due_us is None)
            self.metrics.timers.labels("advanced").inc(len(due) - cancelled)
            self.metrics.timers.labels("cancelled").inc(cancelled)
            self.metrics.feature_rows.inc(len(fired.customers))
        if self.on_features is not None and fired.customers:
            moments = fired.as_of_us.tolist()
            self.on_features(
                {c: TimerOrigin(at) for c, at in zip(fired.customers, moments, strict=True)}
            )

    def _advance_alone(self, timer: Timer, upto: dict[int, int]) -> None:
        assert self.timers is not None
        try:
            self._advance([timer], upto)
        except Exception:
            if self.metrics:
                self.metrics.timers.labels("failed").inc()
            log.exception(
                "the timer of %r could not be fired; tried again tomorrow", timer.customer
            )
            # At the next midnight the partition reaches: once a day, however far behind.
            tomorrow = (upto[timer.partition] // DAY_US + 1) * DAY_US
            later = TimerChange(timer.partition, timer.customer, tomorrow)
            self.timers.note([later])
