"""The online read's bounds: how long a decision waits for the online store, and failing fast
while the store is down."""

from __future__ import annotations

import time

#: A decision waits this long for the online store, then decides without personal features:
#: a slow store must cost a degraded answer, not the latency budget.
READ_TIMEOUT_S = 0.05
#: After a failed read, reads are not tried again for this long (no timeout per request while
#: the store is down); the first read after it probes whether the store is back.
BREAKER_COOL_DOWN_S = 1.0


class OnlineStoreUnavailable(RuntimeError):
    """The online store cannot be read right now."""


class Breaker:
    """Fail fast while a dependency is down: one failure opens it for a cool-down."""

    def __init__(self, cool_down_s: float = BREAKER_COOL_DOWN_S) -> None:
        self.cool_down_s = cool_down_s
        self._open_until = 0.0

    def __enter__(self) -> None:
        if time.monotonic() < self._open_until:
            raise OnlineStoreUnavailable("the online store failed recently; not trying yet")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and not issubclass(kind, OnlineStoreUnavailable):
            self._open_until = time.monotonic() + self.cool_down_s
        elif kind is None:
            self._open_until = 0.0
