"""How much the audit log's writers have committed, counted across threads and event loops."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WriterStats:
    appends: int = 0
    transactions: int = 0  # committed; appends / transactions is the mean group size
    largest_group: int = 0


class WriteCounter:
    """The ``WriterStats`` of one audit log, which every writer of it adds to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = WriterStats()
        #: Told of every committed transaction's record count (the checkpointer).
        self.listeners: list[Callable[[int], None]] = []

    def count(self, written: int) -> None:
        """One transaction committed ``written`` records (none counts nothing)."""
        if not written:
            return
        with self._lock:
            self._stats = WriterStats(
                self._stats.appends + written,
                self._stats.transactions + 1,
                max(self._stats.largest_group, written),
            )
        for listener in self.listeners:
            listener(written)

    @property
    def stats(self) -> WriterStats:
        with self._lock:
            return self._stats
