"""The online read's bounds: how long a decision waits for the online store, and failing fast
while the store is down or slow."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from service.adapters.features.redis_link import ReadLate

#: A decision waits this long for the online store, then decides without personal features:
#: a slow store must cost a degraded answer, not the latency budget.
READ_TIMEOUT_S = 0.05
#: After the breaker opens, reads are not tried again for this long (no timeout per request
#: while the store is down); the first read after it probes whether the store is back.
BREAKER_COOL_DOWN_S = 1.0
#: Late replies on a link that answers open the breaker when they are at least half of the
#: last this many reads: a store slower than the bound, not a burst of this process's own work.
LATE_WINDOW = 20


class OnlineStoreUnavailable(RuntimeError):
    """The online store cannot be read right now."""


class Breaker:
    """Fail fast while a dependency is down or slow.

    A failure that says the store is down (a lost or refused connection, a link on which
    nothing was answered for a whole wait) opens it at once for a cool-down. A late reply
    (``ReadLate``: the store answers, this reply missed the bound) fails only its own read, and
    opens the breaker when late reads are at least half of the last ``LATE_WINDOW``: a process
    saturated for a moment makes a few replies late among many on time, a slow store makes
    them all late, and each of those costs a decision the whole timeout.
    """

    def __init__(
        self,
        cool_down_s: float = BREAKER_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._open_until = 0.0
        self._recent: deque[bool] = deque(maxlen=LATE_WINDOW)  # True: late
        self._late = 0

    def __enter__(self) -> None:
        if self._clock() < self._open_until:
            raise OnlineStoreUnavailable("the online store failed recently; not trying yet")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and issubclass(kind, OnlineStoreUnavailable):
            return
        if kind is not None and not issubclass(kind, ReadLate):
            self._open()
            return
        late = kind is not None
        if len(self._recent) == LATE_WINDOW:
            self._late -= self._recent[0]
        self._recent.append(late)
        self._late += late
        if self._late * 2 >= LATE_WINDOW:
            self._open()
        elif not late:
            self._open_until = 0.0

    def _open(self) -> None:
        self._open_until = self._clock() + self.cool_down_s
        self._recent.clear()  # the probe after the cool-down starts a new count
        self._late = 0
