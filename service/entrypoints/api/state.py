"""What the requests of one app share, kept on ``app.state`` and reached through dependencies:
the container, the metrics, the rate limits, the decisions' bounds and the events' producer."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.adapters.metrics import ApiMetrics
from service.adapters.transport import API_SEND_TIMEOUT_S, Producer
from service.bootstrap import Container
from service.entrypoints.api.decision_runner import DecisionRunner
from service.entrypoints.limits import RateLimiter


class SharedProducer:
    """One producer for every ``POST /v1/events`` of the process, made at first use (requests
    run in a thread pool, hence the lock), with waits bounded by ``API_SEND_TIMEOUT_S``."""

    def __init__(self, container: Container) -> None:
        self._container = container
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def get(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = self._container.producer(API_SEND_TIMEOUT_S)
            return self._producer

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()


@dataclass(frozen=True)
class Shared:
    container: Container
    metrics: ApiMetrics
    rate_limiter: RateLimiter
    decisions: DecisionRunner
    events_producer: SharedProducer


def shared(request: Request) -> Shared:
    """What the request's app shares (set by ``create_app``)."""
    state: Shared = request.app.state.shared
    return state


# Coroutines although they do no I/O: FastAPI runs plain functions in its thread pool.
async def _shared(request: Request) -> Shared:
    return shared(request)


async def _container(request: Request) -> Container:
    return shared(request).container


Sharing = Annotated[Shared, Depends(_shared)]
Wired = Annotated[Container, Depends(_container)]
