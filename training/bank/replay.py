"""Pace a bank's records for a live stream: as fast as possible, at a rate, or at a speed-up of
event time (``speedup=60``: one hour of the bank's life per wall-clock minute)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from training.bank.store import TimedRecord


def paced(
    records: Iterable[TimedRecord],
    rate: float | None = None,
    speedup: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[str | None, bytes]]:
    """(key, value) pairs, no faster than ``rate`` per second or ``speedup`` × event time."""
    if rate is not None and speedup is not None:
        raise ValueError("choose a rate or a speed-up, not both")
    if (rate is not None and rate <= 0) or (speedup is not None and speedup <= 0):
        raise ValueError("rate and speed-up must be positive")
    began = clock()
    first_event: int | None = None
    for sent, (at_us, key, value) in enumerate(records):
        if rate is not None:
            due = began + sent / rate
        elif speedup is not None:
            first_event = at_us if first_event is None else first_event
            due = began + (at_us - first_event) / 1e6 / speedup
        else:
            due = began
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        yield key, value
