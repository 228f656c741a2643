"""The app: the routers, what their requests share, the middleware and the lifespan.

Around the routes, outermost first: ``ServerTiming`` (latency histogram and ``Server-Timing``
header, wrapping even the 500 handler), FastAPI's error handling (``errors``), ``BodyLimit``
(413). Per-key rate limits (429) apply right after authentication (``security``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.types import ASGIApp

from service import __version__
from service.adapters.metrics import ServerTiming, api_metrics
from service.adapters.models import ModelRefresher
from service.bootstrap import Container
from service.entrypoints.api.decision_runner import DecisionRunner
from service.entrypoints.api.errors import install_error_handlers
from service.entrypoints.api.openapi import publish_catalog_and_events
from service.entrypoints.api.routes import (
    alerts,
    audit,
    consents,
    customers,
    decisions,
    events,
    feedback,
    inbox_page,
    operations,
)
from service.entrypoints.api.state import Shared, SharedProducer
from service.entrypoints.heap import freeze_loaded
from service.entrypoints.limits import BodyLimit, RateLimiter

#: In the order their operations are published.
ROUTERS = (
    operations.router,
    decisions.router,
    audit.router,
    consents.router,
    customers.router,
    feedback.router,
    inbox_page.router,
    alerts.router,
    events.router,
)


class _TimedApp(FastAPI):
    """FastAPI with ``ServerTiming`` around its whole middleware stack. ``add_middleware`` would
    put it inside the 500 handler, so a failed request would go untimed and without the header."""

    def build_middleware_stack(self) -> ASGIApp:
        static = [
            path
            for route in iter_route_contexts(self.routes)
            if (path := route.path) is not None and "{" not in path
        ]
        shared: Shared = self.state.shared
        return ServerTiming(super().build_middleware_stack(), shared.metrics, static)


async def _single_query_values(request: Request) -> None:
    """No query parameter is a list: one given twice is refused, not read as its last value
    (which would let an invalid first value through unseen)."""
    repeated = sorted(
        {
            k
            for k, _ in request.query_params.multi_items()
            if len(request.query_params.getlist(k)) > 1
        }
    )
    if repeated:
        raise RequestValidationError(
            [{"loc": ("query", name), "msg": "given more than once"} for name in repeated]
        )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    shared: Shared = app.state.shared
    container = shared.container
    # Without its API keys or the audit's signing key, the process refuses to start (in
    # production neither is made up), rather than start healthy and fail every call.
    _ = container.keyring, container.audit_signer
    refresher = ModelRefresher(container.models, container.settings.model_refresh_seconds)
    refresher.start()
    freeze_loaded()  # Feast, MLflow and the models, loaded at start, stay for the process's life
    try:
        yield
    finally:
        refresher.stop()
        await container.close_async()
        # What this process decided since the last checkpoint is signed and published.
        await asyncio.to_thread(container.close_audit)
    shared.events_producer.close()


def create_app(container: Container, *, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The API on ``container``; ``clock`` (monotonic seconds) drives the rate limits."""
    settings = container.settings
    shared = Shared(
        container=container,
        metrics=api_metrics(),
        rate_limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst, clock),
        decisions=DecisionRunner.for_store(
            settings.max_decisions_in_flight, settings.operational_url
        ),
        events_producer=SharedProducer(container),
    )
    app = _TimedApp(
        title="NextBest",
        version=__version__,
        docs_url="/docs",
        lifespan=_lifespan,
        dependencies=[Depends(_single_query_values)],
    )
    app.state.shared = shared
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    publish_catalog_and_events(app, container.catalog)
    # The served set at scrape time; read lazily, since the first read loads the models.
    shared.metrics.serving(lambda: container.models.values())
    return app
