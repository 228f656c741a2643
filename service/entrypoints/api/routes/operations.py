"""For the operator: liveness, readiness and Prometheus metrics (unauthenticated)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal, TypeVar

from anyio import to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from service import __version__
from service.entrypoints.api.openapi import declared
from service.entrypoints.api.schemas import Health, Readiness
from service.entrypoints.api.state import Wired
from service.usecases.ports import ConsentReads, OnlineFeatureReads

#: How long each of ``/readyz``'s probes may take: a probe that has not answered by then
#: reports its store unavailable (an orchestrator's probe has a timeout of its own, often 1 s).
READINESS_TIMEOUT_S = 1.0
READINESS_PROBE = "readiness-probe"
T = TypeVar("T")

router = APIRouter()


@router.get("/healthz", response_model=Health, responses=declared(500))
async def healthz() -> Health:
    return Health(status="ok", version=__version__)


async def _probe(read: Callable[[], Awaitable[object]]) -> Literal["ok", "unavailable"]:
    """Whether ``read`` answers within ``READINESS_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await read()
    except Exception:  # a timeout, a refusal, a lost connection: all mean not answering
        return "unavailable"
    return "ok"


async def _unavailable() -> Literal["unavailable"]:
    return "unavailable"


def _gate_read(reads: ConsentReads, now: datetime) -> Awaitable[object]:
    if reads.asynchronous:
        return reads.read_async(READINESS_PROBE, now, 1)
    return to_thread.run_sync(reads.read, READINESS_PROBE, now, 1, abandon_on_cancel=True)


def _features_read(features: OnlineFeatureReads) -> Awaitable[object]:
    if features.asynchronous:
        return features.read_async(READINESS_PROBE)
    return to_thread.run_sync(features.read, READINESS_PROBE, abandon_on_cancel=True)


async def _opened(open_: Callable[[], T]) -> T | None:
    """What ``open_`` opens, in a thread (opening blocks), or None if it cannot be opened.
    Stores are opened before any probe's timeout starts, so a first probe times a round trip,
    not the opening of a store."""
    try:
        return await to_thread.run_sync(open_)
    except Exception:  # a store that cannot be opened is not ready
        return None


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}, **declared(500)},
)
async def readyz(c: Wired) -> JSONResponse:
    now = datetime.now(UTC)
    # A customer nobody has: a round trip, nothing more. Through the decision path's own
    # reads, so ready means that path answers, and a stalled store costs the probe their
    # bounds (or nothing, while their breaker is open), not the batch engine's minutes.
    reads = await _opened(lambda: c.gate_reads)
    features = await _opened(lambda: c.features)
    store, online = await asyncio.gather(
        _probe(lambda: _gate_read(reads, now)) if reads is not None else _unavailable(),
        _probe(lambda: _features_read(features)) if features is not None else _unavailable(),
    )
    versions = c.models.versions()
    ready = Readiness(
        ready=store == "ok",
        operational_store=store,
        online_store=online,
        models=",".join(f"{n}@{v}" for n, v in sorted(versions.items())) or "none",
    )
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    description="Prometheus metrics. Unauthenticated, for the operator's scraper: do not "
    "expose it outside the bank's network.",
)
def prometheus_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
