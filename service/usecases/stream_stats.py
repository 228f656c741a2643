"""What a stream worker has done since it started."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from feature_repo.arrival import Applied
from service.adapters.metrics import StreamMetrics


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
    timers_fired: int = 0
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
            "timers_fired": self.timers_fired,
            "events_per_second": round(self.events / elapsed, 1) if elapsed > 0 else 0.0,
        }


def count_batch(
    stats: WorkerStats,
    metrics: StreamMetrics | None,
    applied: Applied,
    rows: int,
    as_of_us: np.ndarray,
) -> None:
    """Count a batch's events by their fate and the rows it wrote (and sample how fresh)."""
    stats.events += applied.applied
    stats.duplicates += applied.duplicates
    stats.late += applied.late
    stats.feature_rows += rows
    if metrics:
        metrics.events.labels("applied").inc(applied.applied)
        metrics.events.labels("duplicate").inc(applied.duplicates)
        metrics.events.labels("late").inc(applied.late)
        metrics.feature_rows.inc(rows)
        now_us = time.time() * 1e6
        for age in (now_us - as_of_us[-100:]) / 1e6:  # a sample keeps this cheap
            metrics.freshness.observe(max(age, 0.0))
