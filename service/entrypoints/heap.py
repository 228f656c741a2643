"""The garbage collector's settings for NextBest's long-running processes.

Everything a process loads at start (Feast, MLflow, pandas, the models) lives as long as it
does. Frozen out of the collector's sight, it is no longer walked by every full collection, a
pause long enough to set the tail latency of the requests it lands on.

The stream worker also collects its youngest generation less often. A batch's records, parsed
events and rows are alive while it is processed: with Python's default threshold (700
allocations) a collection comes in the middle of every batch and promotes them to the older
generations, whose growth then sets off full collections, several per batch, each walking
everything that lives. Collected every 50,000 allocations, most of a batch is gone by then.
``docs/benchmarks/`` has the stream worker's throughput before and after.
"""

from __future__ import annotations

import gc

#: Allocations between two collections of the youngest generation in the stream worker.
WORKER_YOUNG_THRESHOLD = 50_000
#: Collections of a generation between two of the next one (Python's defaults: 10 and 10).
WORKER_OLDER_THRESHOLDS = (20, 10)


def freeze_loaded() -> None:
    """Collect once, then keep everything alive now out of every later collection."""
    gc.collect()
    gc.freeze()


def settle_stream_worker() -> None:
    """The stream worker's process, once it is wired and before it consumes."""
    freeze_loaded()
    gc.set_threshold(WORKER_YOUNG_THRESHOLD, *WORKER_OLDER_THRESHOLDS)
