"""Event time in the stream worker: per-partition watermarks, and when timers fire.

**Watermarks.** A partition's watermark is how far in event time the worker has processed it:
the latest event time it applied from the partition (never beyond the wall clock), or the wall
clock itself once the worker has nothing left to read (an empty poll). A replay of history
moves it through history; a live stream keeps it at about now.

**Timers** fire when their partition's watermark passes them, as stream processors' event-time
timers do. A replay of history thus writes each customer's row at every midnight her features
change, exactly as of that day, and the live stream does the same in real time. Each round
takes the timers due, earliest first, as many as fit the time the worker gives timers after a
poll: little while records are arriving, so events never wait long behind a midnight's (or a
catch-up's) timers, and much when the stream is quiet. A round's size follows what firing a
timer has cost lately (a timer stepping a customer through ten midnights costs ten of one).

The changes a round or a batch makes to the timers are kept in memory and stored only once the
rows they cover are durable offline (``StreamWorker.flush_and_commit``), like offsets: a crash
before that fires the same timers again, which writes the same rows again and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from service.adapters.timers import Timer, TimerChange, TimerIndex, WatermarkStore

log = logging.getLogger(__name__)

#: How often the worker looks for due timers when none were left over.
TIMER_CHECK_S = 1.0
#: At most this many timers per round, and fired but not stored yet (each round looks past
#: those in the index): the worker flushes before firing more.
TIMER_BATCH = 5_000
#: The fewest timers a round takes, however costly they have been.
MIN_ROUND = 16
#: What firing one timer is assumed to cost before any was measured (seconds).
FIRST_COST_S = 1e-3
#: How often the watermarks are published for serving.
PUBLISH_S = 1.0


def wall_clock_us() -> int:
    return time.time_ns() // 1_000


class StreamTimers:
    def __init__(
        self,
        index: TimerIndex,
        clock: Callable[[], int] = wall_clock_us,
        check_s: float = TIMER_CHECK_S,
        batch: int = TIMER_BATCH,
        sink: WatermarkStore | None = None,
    ) -> None:
        self.index = index
        #: Where the watermarks are published (serving reads them there).
        self.sink = sink
        #: Now, in epoch µs (a simulated clock in tests and benchmarks).
        self.clock = clock
        self.check_s = check_s
        self.batch = batch
        #: Per partition, how far in event time it is processed (epoch µs).
        self.watermarks: dict[int, int] = {}
        self._pending: dict[tuple[int, str], TimerChange] = {}
        self._next_check = 0.0
        self._next_publish = 0.0
        #: Seconds per timer fired, a moving average (sizes the rounds to a time budget).
        self._cost_s = FIRST_COST_S

    # --- watermarks -----------------------------------------------------------------------
    def observe(self, partition: int, event_us: int) -> None:
        """An event of ``partition`` was applied."""
        moment = min(event_us, self.clock())
        if moment > self.watermarks.get(partition, -1):
            self.watermarks[partition] = moment

    def caught_up(self, partitions: Sequence[int]) -> None:
        """Nothing was left to read on these partitions: they are processed up to now."""
        now = self.clock()
        for partition in partitions:
            self.watermarks[partition] = max(self.watermarks.get(partition, now), now)

    def owned(self, partitions: Sequence[int]) -> dict[int, int]:
        """The watermarks of the partitions owned now (others' are forgotten: a partition
        that comes back is read from its committed offset again)."""
        mine = set(partitions)
        for partition in [p for p in self.watermarks if p not in mine]:
            del self.watermarks[partition]
        return {p: self.watermarks[p] for p in partitions if p in self.watermarks}

    def publish(self, partitions: Sequence[int], force: bool = False) -> None:
        """Publish how far each owned partition is processed: its watermark, or just before
        its earliest timer still to fire, if that is earlier (a midnight's timers take a few
        rounds). A failure is logged: serving then sees the watermark age."""
        if self.sink is None or (not force and time.monotonic() < self._next_publish):
            return
        self._next_publish = time.monotonic() + PUBLISH_S
        try:
            upto = self.owned(partitions)
            out = {}
            for partition, moment in upto.items():
                found = self.index.due({partition: moment}, 1 + len(self._pending))
                left = [t for t in found if (t.partition, t.customer) not in self._pending]
                out[partition] = min(moment, left[0].due_us - 1) if left else moment
            self.sink.publish(out)
        except Exception as error:  # the store may be away; the next publish tries again
            log.warning("watermarks not published: %s", error)

    # --- timers ---------------------------------------------------------------------------
    def note(self, changes: Sequence[TimerChange]) -> None:
        """Changes made by a batch or a round, stored at the next ``store``."""
        for change in changes:
            self._pending[(change.partition, change.customer)] = change

    def due(
        self, partitions: Sequence[int], force: bool = False, limit: int | None = None
    ) -> list[Timer]:
        """The timers to fire now, at most ``limit`` (a full round by default; none between
        checks unless ``force``), on the partitions owned. Timers fired already, whose changes
        are not stored yet, are left out."""
        if not force and time.monotonic() < self._next_check:
            return []
        size = self.batch if limit is None else max(1, min(limit, self.batch))
        upto = self.owned(partitions)
        found = self.index.due(upto, size + len(self._pending))
        due = [t for t in found if (t.partition, t.customer) not in self._pending][:size]
        # A full round may have more behind it: look again at once.
        self._next_check = 0.0 if len(due) == size else time.monotonic() + self.check_s
        return due

    def round_size(self, budget_s: float) -> int:
        """How many timers fit in ``budget_s``, at what they have cost lately."""
        return max(MIN_ROUND, min(self.batch, int(budget_s / self._cost_s)))

    def took(self, timers: int, seconds: float) -> None:
        """A round fired ``timers`` in ``seconds``."""
        if timers:
            self._cost_s = 0.7 * self._cost_s + 0.3 * max(seconds / timers, 1e-6)

    @property
    def behind(self) -> bool:
        """The last round was full: more timers may be due now."""
        return self._next_check == 0.0

    @property
    def unstored(self) -> int:
        """Timer changes noted and not stored yet."""
        return len(self._pending)

    def store(self) -> None:
        """Store the changes noted (after the rows they cover are durable)."""
        if not self._pending:
            return
        self.index.apply(list(self._pending.values()))
        self._pending.clear()
