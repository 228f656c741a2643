"""Prometheus metrics of the stream worker (the API's come with the API)."""

from __future__ import annotations

from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "nextbest_stream_events",
            "Events consumed, by outcome (applied, duplicate, late, dead_letter).",
            ["outcome"],
            registry=registry,
        )
        self.batches = Counter("nextbest_stream_batches", "Batches processed.", registry=registry)
        self.feature_rows = Counter(
            "nextbest_stream_feature_rows", "Feature rows written online.", registry=registry
        )
        self.commits = Counter(
            "nextbest_stream_commits", "Offset commits after a durable flush.", registry=registry
        )
        self.lag = Gauge(
            "nextbest_stream_consumer_lag",
            "Records between the committed offset and the end of each partition.",
            ["partition"],
            registry=registry,
        )
        self.freshness = Histogram(
            "nextbest_stream_feature_freshness_seconds",
            "From an event's time to its features being readable online.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 3600, 86_400, float("inf")),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "nextbest_stream_batch_seconds",
            "Time to process one batch (parse, fold, write).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf")),
            registry=registry,
        )


@cache
def stream_metrics() -> StreamMetrics:
    """The process's stream metrics (Prometheus names are global to a process)."""
    return StreamMetrics()
