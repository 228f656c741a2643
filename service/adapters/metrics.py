"""Prometheus metrics of the stream worker and of the API, and the API's timing middleware.

Prometheus names are global to a process, and tests build several apps in one: each set of
metrics is created once per process (``stream_metrics()``, ``api_metrics()``) and shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import cache
from time import perf_counter
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent.rules.record import DecisionRecord


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events = Counter(
            "nextbest_stream_events",
            "Events consumed, by outcome (applied, duplicate, late, dead_letter, erased).",
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
        self.timers = Counter(
            "nextbest_stream_timers",
            "Timers fired, by outcome (advanced: features moved to today; cancelled: nothing "
            "left to change; failed: the customer's state could not be advanced).",
            ["outcome"],
            registry=registry,
        )
        self.timer_lag = Gauge(
            "nextbest_stream_timer_lag_seconds",
            "How late the earliest timer fired in the latest round was.",
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


@cache
def send_failures() -> Counter:
    """Sends the broker (or the local log) did not acknowledge, by what was sent (``event``,
    ``dead_letter``, ``alert``): each is also logged, and retried or refused to its caller."""
    return Counter(
        "nextbest_send_failures",
        "Records not acknowledged by the event transport, by what they were.",
        ["what"],
    )


#: Fine at the low end, where a decision's latency lives, up to the second beyond which
#: anything is an incident whatever its exact duration.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    float("inf"),
)
#: From a live stream (seconds) to a nightly extract (a day) and a customer gone quiet (weeks).
FEATURE_AGE_BUCKETS = (
    1,
    5,
    15,
    60,
    300,
    900,
    3600,
    6 * 3600,
    86_400,
    3 * 86_400,
    7 * 86_400,
    30 * 86_400,
    float("inf"),
)
#: Request methods kept as a label; any other (a client's invention) is counted as "other", so
#: a caller cannot grow the number of series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of requests that matched no route: their paths are the caller's to choose.
UNMATCHED = "unmatched"


class ServedModel(Protocol):
    @property
    def need(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.request_seconds = Histogram(
            "nextbest_http_request_seconds",
            "From receiving a request to starting its response, by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "nextbest_decisions",
            "Decisions recorded, by channel and delivery status.",
            ["channel", "delivery_status"],
            registry=registry,
        )
        self.suppressions = Counter(
            "nextbest_suppressions",
            "Reason codes of suppressed candidates (one per code of each suppressed candidate).",
            ["reason_code"],
            registry=registry,
        )
        self.served_models = _ServedModels()
        registry.register(self.served_models)
        self.feature_age = Histogram(
            "nextbest_decision_feature_age_seconds",
            "Age of the features a decision read, once per group of features read together.",
            buckets=FEATURE_AGE_BUCKETS,
            registry=registry,
        )
        # Children by label values: a dict lookup instead of labels()'s lock and checks on
        # the hot path. A racing first use makes the same child twice, which is harmless.
        self._latency: dict[tuple[str, str, int], Any] = {}
        self._decided: dict[tuple[str, str], Any] = {}
        self._suppressed: dict[str, Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in _METHODS else "other", route, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.request_seconds.labels(key[0], route, str(status))
        child.observe(seconds)

    def observe_decision(self, record: DecisionRecord) -> None:
        key = (record.channel, record.delivery_status)
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decided[key] = self.decisions.labels(*key)
        decided.inc()
        for candidate in record.candidates:
            if candidate.delivered:
                continue
            for code in candidate.suppressed_by:
                suppressed = self._suppressed.get(code)
                if suppressed is None:
                    suppressed = self._suppressed[code] = self.suppressions.labels(code)
                suppressed.inc()
        # The record keeps features once per read (as_of, age); so does the histogram.
        for _, age in {(f.as_of, f.age_seconds) for f in record.features}:
            if age is not None:
                self.feature_age.observe(age)

    def serving(self, models: Callable[[], Iterable[ServedModel]]) -> None:
        """Report what ``models()`` returns at each scrape as ``nextbest_model_info``."""
        self.served_models.source = models


class _ServedModels(Collector):
    """``nextbest_model_info{need, name, version} 1``, read from the served models at each
    scrape. A collector rather than a gauge: after a promotion or a rollback a gauge would go on
    reporting the old version until someone removed its series."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[ServedModel]] = tuple

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "nextbest_model_info",
            "The need models being served (1 per need, with name and version).",
            labels=["need", "name", "version"],
        )
        for model in self.source():
            family.add_metric([model.need, model.name, model.version], 1)
        yield family


@cache
def api_metrics() -> ApiMetrics:
    """The process's API metrics, shared by every app built in it."""
    return ApiMetrics()


class ServerTiming:
    """Pure ASGI middleware timing each request from receipt to the start of its response:
    observed in ``nextbest_http_request_seconds`` and sent as ``Server-Timing: app;dur=MS``
    (milliseconds, three decimals), which benchmarks read for the server's share of latency.

    It must wrap the whole app, error handling included, so a 500 is timed and carries the
    header too (see ``service.entrypoints.api``)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, static_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        # Routes FastAPI does not report in the scope (its /openapi.json and /docs), by path.
        self.static_paths = frozenset(static_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = perf_counter() - started
                headers = list(message.get("headers", ()))
                headers.append((b"server-timing", b"app;dur=%.3f" % (elapsed * 1000.0)))
                message = {**message, "headers": headers}
                # Routing has put the matched route in the scope by now; its template (not the
                # path, which holds customer ids) is the label.
                route = getattr(scope.get("route"), "path", None) or (
                    scope["path"] if scope["path"] in self.static_paths else UNMATCHED
                )
                self.metrics.observe_request(scope["method"], route, message["status"], elapsed)
            await send(message)

        await self.app(scope, receive, timed_send)
