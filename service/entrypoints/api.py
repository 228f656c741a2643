"""The HTTP API (FastAPI). Thin: requests are validated here, the work happens in the domain.

Around the routes, outermost first: ``ServerTiming`` (latency histogram and ``Server-Timing``
header, wrapping even the 500 handler), FastAPI's error handling, ``BodyLimit`` (413). Per-key
rate limits (429) apply right after authentication. Every error has the shape of
``ErrorResponse``, and every operation declares the errors it can answer with.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp

from consent.rules.policy import Catalog
from consent.rules.vocabulary import ConsentChannel, ContactChannel, Purpose
from consent.stores.contacts import ContactMade
from consent.stores.registry import recorder
from feature_repo.events import (
    JSON_INTEGER,
    NOTE_PATTERN,
    SAFE_ID_PATTERN,
    TEXT_PATTERN,
    ConsentChangedEvent,
    CustomerId,
    Event,
    InvalidEvent,
    Rfc3339Time,
    event_to_json,
    parse_event,
)
from service import __version__
from service.adapters.deadletter import PRINCIPAL_HEADER
from service.adapters.metrics import ApiMetrics, ServerTiming, api_metrics, send_failures
from service.adapters.models import ModelRefresher
from service.adapters.transport import API_SEND_TIMEOUT_S, EVENTS_TOPIC
from service.bootstrap import Container
from service.entrypoints.auth import Principal, Role
from service.entrypoints.limits import BodyLimit, RateLimiter
from service.errors import (
    HTTP_STATUS_CODES,
    ErrorCode,
    Forbidden,
    InvalidEvents,
    InvalidRequest,
    NextBestError,
    NotFound,
    Overloaded,
    RateLimited,
    StoreUnavailable,
    TransportUnavailable,
    Unauthenticated,
    error_document,
)
from service.usecases.alert_model import Alert, Outcome, shown_to
from service.usecases.alert_model import Status as AlertStatus
from service.usecases.consent_writes import RecordConsentChoice, consent_entries
from service.usecases.decisions import CUSTOMER_UNKNOWN, DecideForCustomer, DecisionMade
from service.usecases.erasure import erase_customer

log = logging.getLogger(__name__)

#: Decisions a process runs at once: on the event loop (PostgreSQL and Redis, see
#: ``DecisionService.decide_async``) or in as many worker threads (the other stores). Requests
#: beyond this wait their turn in the event loop. The gate's read pool keeps as many
#: connections. Under the GIL more threads add no CPU, only waiting; 4, 8 and 32 measured the
#: same as 16.
DECISION_THREADS = 16
#: How long a decision may take in all, its wait for a turn (or a thread) included: the gate's
#: read and the audit append have bounds of their own (``consent.stores.bounds``), this is the
#: whole, so a client is answered (503 ``overloaded``) within about two seconds whatever stalls.
DECISION_DEADLINE_S = 1.5

#: How long each of ``/readyz``'s probes may take: a probe that has not answered by then
#: reports its store unavailable (an orchestrator's probe has a timeout of its own, often 1 s).
READINESS_TIMEOUT_S = 1.0
READINESS_PROBE = "readiness-probe"

MAX_EVENTS_PER_REQUEST = 500
DecisionId = Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]
#: How the published schema states the time bounds (a business rule relative to the server's
#: clock that no fixed schema can express).
TIME_BOUNDS = (
    "An RFC 3339 date-time with an offset. It must lie within the server's bounds: at most "
    "NEXTBEST_MAX_CLOCK_SKEW_SECONDS ahead of its clock and NEXTBEST_MAX_EVENT_AGE_DAYS behind "
    "it; outside them the request is refused with 422."
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionContext(_Request):
    page: Annotated[str, Field(max_length=64, pattern=TEXT_PATTERN)] | None = None
    event_id: Annotated[str, Field(max_length=128, pattern=TEXT_PATTERN)] | None = None


class DecisionRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"customer_id": "C0000042", "channel": "mobile_app"}]}
    )

    customer_id: CustomerId
    channel: ContactChannel
    limit: Annotated[int, Field(ge=1, le=10), JSON_INTEGER] = 3
    context: DecisionContext = Field(
        default_factory=DecisionContext,
        description="Must not carry the customer id: it would be written to the audit log in "
        "clear and outlive an erasure. A context naming it is refused with 422.",
    )


class ReasonOut(BaseModel):
    feature: str
    value: float | None
    contribution: float
    text: str = Field(
        description='The reason in words, e.g. "loan calculator views, last 7 days: 5".'
    )


class ActionOut(BaseModel):
    action_id: str
    title: str
    need: str | None
    kind: str
    score: float | None
    value: float
    priority: float
    propensity: float = Field(description="Calibrated score; 1 for a triggered or unscored action.")
    context_weight: float = Field(description="How much the page being viewed raises the action.")
    lever: float = Field(description="The business lever the bank set for the action.")
    reasons: list[ReasonOut]


class NoticeOut(BaseModel):
    """Something about the decision everyone may know: data out of date, a degraded answer."""

    code: Literal["FEATURES_STALE", "DEGRADED", "CUSTOMER_UNKNOWN"]
    message: str


class SuppressedOut(BaseModel):
    action_id: str
    reason_codes: list[str]
    details: list[str]


class DecisionResponse(BaseModel):
    decision_id: str
    customer_id: str
    channel: str
    decided_at: datetime
    actions: list[ActionOut]
    suppressed: list[SuppressedOut] | None = Field(
        None, description="Why the other actions were not delivered: compliance role only."
    )
    degraded: bool
    fallback: str | None
    notices: list[NoticeOut] = Field(default_factory=list)
    policy_version: str
    models: dict[str, str]
    audit_seq: int
    audit_hash: str


class ConsentIn(_Request):
    granted: StrictBool
    source: Annotated[str, Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)] = Field(
        description="Where the choice was captured (e.g. app_settings): the client's label. "
        "Who recorded it is the API key, kept as recorded_by."
    )
    notice_version: Annotated[str, Field(min_length=1, max_length=32, pattern=TEXT_PATTERN)]
    given_at: Rfc3339Time | None = Field(
        None,
        description="When the customer gave it, if before now: kept as evidence. The bank's "
        "own time (recorded_at, now) is what orders the history. " + TIME_BOUNDS,
    )


class ChannelConsentIn(ConsentIn):
    """Marketing and service consent are given per channel."""

    purpose: Literal["marketing", "service"]
    channel: ContactChannel


class ProfilingConsentIn(ConsentIn):
    """Profiling is not tied to a channel: none is given."""

    purpose: Literal["profiling"]
    channel: None = Field(None, description="Profiling takes no channel.")


AnyConsentIn = Annotated[ChannelConsentIn | ProfilingConsentIn, Field(discriminator="purpose")]


class ConsentsIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "consents": [
                        {
                            "purpose": "marketing",
                            "channel": "email",
                            "granted": True,
                            "source": "app_settings",
                            "notice_version": "2026-01",
                        },
                        {
                            "purpose": "profiling",
                            "granted": False,
                            "source": "app_settings",
                            "notice_version": "2026-01",
                        },
                    ]
                }
            ]
        }
    )

    consents: Annotated[list[AnyConsentIn], Field(min_length=1, max_length=50)]


class FeedbackIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C0000042",
                    "action_id": "mortgage_consultation",
                    "channel": "mobile_app",
                    "kind": "decline",
                }
            ]
        }
    )

    customer_id: CustomerId
    action_id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    channel: ContactChannel
    kind: Literal["impression", "accept", "decline", "dismiss"]
    decision_id: Annotated[str, Field(max_length=64, pattern=TEXT_PATTERN)] | None = None
    occurred_at: Rfc3339Time | None = Field(None, description=TIME_BOUNDS)


class EventsIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_id": "app-7f3c2a",
                            "customer_id": "C0000042",
                            "type": "login",
                            "occurred_at": "2026-11-29T08:00:00Z",
                            "channel": "mobile_app",
                        }
                    ]
                }
            ]
        }
    )

    # Each event's own fields are checked by the event contract (422 naming the bad ones);
    # the size of the whole batch is bounded by NEXTBEST_MAX_REQUEST_BYTES.
    events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]


class ErrorOut(BaseModel):
    code: ErrorCode
    message: str
    details: Any = Field(None, description="What exactly was wrong, when that helps (e.g. 422).")


class ErrorResponse(BaseModel):
    error: ErrorOut


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    ready: bool = Field(
        description="True when consent can be checked (the operational store answers). A "
        "process whose online store is down still serves, degraded, and says so here."
    )
    operational_store: Literal["ok", "unavailable"]
    online_store: Literal["ok", "unavailable"]
    models: str = Field(description="need@version of each served model, or 'none'.")


class AuditEntry(BaseModel):
    seq: int
    decision_id: str
    recorded_at: str
    customer_ref: str
    prev_hash: str
    record_hash: str
    record: dict[str, Any] = Field(description="The decision record as stored and hashed.")


class ChainVerified(BaseModel):
    ok: bool
    records: int
    head_hash: str
    first_bad_seq: int | None
    first_bad_decision: str | None
    problem: str | None


class ConsentOut(BaseModel):
    purpose: Purpose
    channel: ConsentChannel
    granted: bool
    recorded_at: datetime = Field(description="When the bank recorded it (UTC): what orders.")
    given_at: datetime = Field(description="When the customer gave it, as told (UTC).")
    source: str
    notice_version: str
    recorded_by: str | None = Field(
        description="Who recorded it: <role>:<API key name>, stream or load."
    )


class CustomerConsents(BaseModel):
    customer_id: str
    consents: list[ConsentOut]
    note: str
    history: list[ConsentOut] | None = Field(
        None, description="Every entry, in the order written (with ?history=true)."
    )


class CustomerErasedOut(BaseModel):
    erased: Literal[True]
    #: The audit record of the erasure (it names nobody).
    erasure_id: str
    audit_key: bool
    consent_entries: int
    contact_entries: int
    directory_entry: bool
    alerts: int
    online_features: bool
    stream_state: bool
    offline_rows: int
    dead_letters: int
    raw_events: int


class FeedbackRecorded(BaseModel):
    recorded: int


class AlertList(BaseModel):
    alerts: list[Alert]
    unchecked: int = Field(
        0,
        description="Queued or open alerts left out because consent could not be checked now.",
    )


class DispositionIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"outcome": "contacted", "note": "Meeting on Friday"}]}
    )

    outcome: Outcome
    note: Annotated[str, Field(max_length=1000, pattern=NOTE_PATTERN)] | None = None


class EventsAccepted(BaseModel):
    accepted: int


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the error responses an operation can give."""
    return {status: {"model": ErrorResponse} for status in statuses}


#: Every /v1 operation authenticates, authorizes, rate-limits and validates.
_V1_ERRORS = (401, 403, 422, 429)
#: The inbox page runs only its own script and talks only to this API.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
#: And those with a body may get one that is not JSON (400) or too large (413).
_BODY_ERRORS = (400, 413)


def _error(
    status: int,
    code: ErrorCode,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_document(code, message, details), status, headers=headers)


def _response(made: DecisionMade, container: Container, principal: Principal) -> DecisionResponse:
    record = made.record
    actions = []
    for action_id in record.delivered:
        candidate = next(c for c in record.candidates if c.action_id == action_id)
        action = container.catalog.actions[action_id]
        actions.append(
            ActionOut(
                action_id=action_id,
                title=action.title,
                need=candidate.need,
                kind=candidate.kind,
                score=candidate.score,
                value=candidate.value,
                priority=candidate.priority,
                propensity=candidate.propensity,
                context_weight=candidate.context_weight,
                lever=candidate.lever,
                reasons=[
                    ReasonOut(
                        feature=r.feature,
                        value=r.value,
                        contribution=round(r.contribution, 4),
                        text=r.text,
                    )
                    for r in made.reasons.get(candidate.need or "", ())
                ],
            )
        )
    # Suppression reasons can reveal what a front line must not see (an AML flag, vulnerability):
    # only compliance reads them; everyone else sees what was delivered.
    suppressed = None
    if principal.role == "compliance":
        suppressed = [
            SuppressedOut(
                action_id=c.action_id,
                reason_codes=c.suppressed_by,
                details=[r.detail for r in c.rules if not r.passed],
            )
            for c in record.candidates
            if not c.delivered and c.suppressed_by
        ]
    notices = []
    stale = [c.action_id for c in record.candidates if "FEATURES_STALE" in c.suppressed_by]
    if stale:
        notices.append(
            NoticeOut(
                code="FEATURES_STALE",
                message=f"withheld because the customer's data is out of date: {', '.join(stale)}",
            )
        )
    if CUSTOMER_UNKNOWN in record.reason_codes:
        notices.append(
            NoticeOut(
                code=CUSTOMER_UNKNOWN,
                message="the customer is not in the bank's directory: nothing is offered",
            )
        )
    if record.fallback is not None:
        notices.append(
            NoticeOut(
                code="DEGRADED",
                message="decided without personal features (the online store is unavailable)",
            )
        )
    return DecisionResponse(
        notices=notices,
        decision_id=record.decision_id,
        customer_id=made.customer_id,
        channel=record.channel,
        decided_at=record.decided_at,
        actions=actions,
        suppressed=suppressed,
        degraded=record.fallback is not None,
        fallback=record.fallback,
        policy_version=record.policy_version,
        models={m.need: f"{m.name}/{m.version}" for m in record.models},
        audit_seq=made.audit.seq,
        audit_hash=made.audit.record_hash,
    )


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method the routes on the request's path take."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods.update(route.methods or ())
    return ", ".join(sorted(methods))


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


def _publish_catalog_and_events(app: FastAPI, catalog: Catalog) -> None:
    """What the request models cannot say by themselves, added to the published document: the
    action ids feedback may name (the catalog is data, loaded at start), and the event
    contract (``feature_repo.events.Event``, by which each event of a batch is validated)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document["components"]["schemas"]
        schemas["FeedbackIn"]["properties"]["action_id"]["enum"] = sorted(catalog.actions)
        event = TypeAdapter(Event).json_schema(ref_template="#/components/schemas/{model}")
        definitions = event.pop("$defs")
        if set(definitions) & set(schemas):
            raise RuntimeError(f"event schemas clash with {set(definitions) & set(schemas)}")
        schemas.update(definitions)
        schemas["Event"] = event
        events = schemas["EventsIn"]["properties"]["events"]
        events["items"] = {"$ref": "#/components/schemas/Event"}
        return document

    app.openapi = openapi  # type: ignore[method-assign]


async def get_container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


Wired = Annotated[Container, Depends(get_container)]
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)
_BEARER = HTTPBearer(auto_error=False)


def _principal(request: Request, credential: str | None, roles: tuple[Role, ...]) -> Principal:
    """Who is calling (401), within their rate (429), in one of ``roles`` (403)."""
    state = request.app.state
    principal = state.container.keyring.authenticate(credential)
    if principal is None:
        raise Unauthenticated()
    # Limited by key name after authentication: unauthenticated calls cannot spend a real
    # key's budget, and forbidden ones still count against the key that made them.
    wait = state.rate_limiter.take(principal.name)
    if wait:
        raise RateLimited(wait)
    if principal.role not in roles:
        raise Forbidden()
    return principal  # type: ignore[no-any-return]


def _credential(request: Request) -> str | None:
    """The API key, or else the bearer token, as ``_API_KEY`` and ``_BEARER`` read them."""
    key = request.headers.get(_API_KEY.model.name)
    if key:
        return key
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if scheme.lower() == "bearer" and token else None


def allow(*roles: Role) -> Any:
    """A dependency that lets only ``roles`` through. A coroutine although it does no I/O:
    FastAPI runs plain functions in its thread pool, and a thread hop costs more than it does."""

    async def check(
        request: Request,
        key: Annotated[str | None, Security(_API_KEY)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> Principal:
        return _principal(request, key or (bearer.credentials if bearer else None), roles)

    return Depends(check)


async def _probe(read: Callable[[], Awaitable[object]]) -> Literal["ok", "unavailable"]:
    """Whether ``read`` answers within ``READINESS_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await read()
    except Exception:  # a timeout, a refusal, a lost connection: all mean not answering
        return "unavailable"
    return "ok"


def _direct(body_model: type[BaseModel], roles: tuple[Role, ...]) -> type[APIRoute]:
    """A route class for the hot path, ``POST /v1/decisions``. The operation is declared like
    the others (body model, security, responses: FastAPI writes its OpenAPI), but its handler
    does what the operation needs itself: ``_principal`` as the dependencies do, the body parsed
    by the model's own JSON validator (422 in the same shape), then the endpoint, called as
    ``endpoint(body, container, principal)``. FastAPI's generic request handling (dependency
    solving, a JSON parse and a second validation of the body) cost 0.12-0.16 ms of CPU more
    per request, in process with the decision stubbed (a decision is about 2 ms)."""

    class Direct(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            endpoint = self.endpoint

            async def handle(request: Request) -> Response:
                principal = _principal(request, _credential(request), roles)
                media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if not (
                    media == "application/json"
                    or (media.startswith("application/") and media.endswith("+json"))
                ):
                    raise RequestValidationError(
                        [{"loc": ("body",), "msg": "the body must be JSON (application/json)"}]
                    )
                raw = await request.body()
                try:
                    raw.decode()
                except UnicodeDecodeError:  # not text at all: 400, as FastAPI answers it
                    raise StarletteHTTPException(400) from None
                try:
                    body = body_model.model_validate_json(raw)
                except ValidationError as error:
                    raise RequestValidationError(
                        [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
                    ) from None
                return await endpoint(body, request.app.state.container, principal)  # type: ignore[no-any-return]

            return handle

    return Direct


DECIDING: tuple[Role, ...] = ("channel", "rm", "compliance")
Deciding = Annotated[Principal, allow(*DECIDING)]
Auditing = Annotated[Principal, allow("compliance")]
ReadingConsent = Annotated[Principal, allow("channel", "rm", "compliance")]
RecordingConsent = Annotated[Principal, allow("channel", "rm")]
SendingEvents = Annotated[Principal, allow("channel", "admin")]
#: Who may send ``consent_changed`` events: the channels' backends, relaying the choices their
#: customers made in the app, on the web or at a branch. Not admin (operations), nor rm,
#: compliance (they record consent through ``PUT /v1/customers/{id}/consents``, with their
#: key as its author, or not at all).
CONSENT_EVENT_ROLES: tuple[Role, ...] = ("channel",)
GivingFeedback = Annotated[Principal, allow("channel", "rm")]
Erasing = Annotated[Principal, allow("compliance")]
ReadingAlerts = Annotated[Principal, allow("rm", "compliance", "admin")]
DisposingAlerts = Annotated[Principal, allow("rm", "admin")]
RmId = Annotated[str, Field(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]


class _TimedApp(FastAPI):
    """FastAPI with ``ServerTiming`` around its whole middleware stack. ``add_middleware`` would
    put it inside the 500 handler, so a failed request would go untimed and without the header."""

    def build_middleware_stack(self) -> ASGIApp:
        static = [path for r in self.routes if "{" not in (path := getattr(r, "path", "{"))]
        return ServerTiming(super().build_middleware_stack(), self.state.metrics, static)


def create_app(container: Container, *, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The API on ``container``; ``clock`` (monotonic seconds) drives the rate limits."""
    settings = container.settings
    limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
        weakref.WeakKeyDictionary()
    )

    def decision_limiter() -> CapacityLimiter:
        """At most ``DECISION_THREADS`` decisions at once (per event loop: tests run several)."""
        loop = asyncio.get_running_loop()
        limiter = limiters.get(loop)
        if limiter is None:
            limiter = limiters[loop] = CapacityLimiter(DECISION_THREADS)
        return limiter

    producer_holder: dict[str, Any] = {}
    producer_lock = threading.Lock()
    in_flight = 0  # decisions taken on and not yet answered (this process has one event loop)
    # The deadline bounds waits for a server that stops answering. The embedded store is a
    # local file that has no network to stall on (its lock waits have their own bound): there
    # a decision takes the time its work takes, and a slow machine answers late, not 503.
    deadline_s = None if settings.operational_url.startswith("sqlite") else DECISION_DEADLINE_S

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        refresher = ModelRefresher(container.models, settings.model_refresh_seconds)
        refresher.start()
        # Everything loaded at start (Feast, MLflow, models) stays for the process's life: out
        # of the collector's sight, a full collection no longer walks half a million objects
        # (measured: a 326 ms pause that set the p99).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            refresher.stop()
            await container.close_async()
        producer = producer_holder.pop("producer", None)
        if producer is not None:
            producer.close()

    app = _TimedApp(
        title="NextBest",
        version=__version__,
        docs_url="/docs",
        lifespan=lifespan,
        dependencies=[Depends(_single_query_values)],
    )
    metrics: ApiMetrics = api_metrics()
    app.state.container = container
    app.state.metrics = metrics
    app.state.rate_limiter = RateLimiter(
        settings.rate_limit_per_second, settings.rate_limit_burst, clock
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    _publish_catalog_and_events(app, container.catalog)
    # The served set at scrape time; read lazily, since the first read loads the models.
    metrics.serving(lambda: container.models.values())

    @app.exception_handler(NextBestError)
    async def _nextbest_error(_: Request, error: NextBestError) -> JSONResponse:
        return _error(error.status, error.code, error.message, error.details, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # The framework's own errors (no route, wrong method, unreadable or oversized body) in
        # our shape, with our wording: their detail texts are not ours to keep stable.
        code, message = HTTP_STATUS_CODES.get(
            error.status_code,
            ("internal_error", "internal error")
            if error.status_code >= 500
            else ("invalid_request", "the request is not valid"),
        )
        headers = error.headers
        if error.status_code == 405:
            # Starlette names the methods of the first route on the path; a path served by
            # several routes (GET and PUT consents) takes all of them (RFC 9110, 15.5.6).
            headers = {**(headers or {}), "Allow": _allowed_methods(app, request)}
        return _error(error.status_code, code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
            for e in error.errors()
        ]
        return _error(422, "invalid_request", "the request is not valid", details)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal_error", "internal error")

    @app.get("/healthz", response_model=Health, responses=_errors(500))
    async def healthz() -> Health:
        return Health(status="ok", version=__version__)

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready."}, **_errors(500)},
    )
    async def readyz(c: Wired) -> JSONResponse:
        now = datetime.now(UTC)
        # A customer nobody has: a round trip, nothing more. Through the decision path's own
        # reads, so ready means that path answers, and a stalled store costs the probe their
        # bounds (or nothing, while their breaker is open), not the batch engine's minutes.
        store, online = await asyncio.gather(
            _probe(
                lambda: (
                    c.gate_reads.read_async(READINESS_PROBE, now, 1)
                    if c.gate_reads.asynchronous
                    else to_thread.run_sync(
                        c.gate_reads.read, READINESS_PROBE, now, 1, abandon_on_cancel=True
                    )
                )
            ),
            _probe(
                lambda: (
                    c.features.read_async(READINESS_PROBE)
                    if c.features.asynchronous
                    else to_thread.run_sync(
                        c.features.read, READINESS_PROBE, abandon_on_cancel=True
                    )
                )
            ),
        )
        versions = c.models.versions()
        ready = Readiness(
            ready=store == "ok",
            operational_store=store,
            online_store=online,
            models=",".join(f"{n}@{v}" for n, v in sorted(versions.items())) or "none",
        )
        return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        description="Prometheus metrics. Unauthenticated, for the operator's scraper: do not "
        "expose it outside the bank's network.",
    )
    def prometheus_metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def decide(body: DecisionRequest, c: Wired, who: Deciding) -> Response:
        command = DecideForCustomer(
            customer_id=body.customer_id,
            channel=body.channel,
            limit=body.limit,
            context=body.context.model_dump(exclude_none=True),
        )
        nonlocal in_flight
        if in_flight >= settings.max_decisions_in_flight:
            raise Overloaded()
        in_flight += 1
        try:
            decisions = c.decisions  # wired on first use (stores opened): not the deadline's
            async with asyncio.timeout(deadline_s):
                if decisions.asynchronous:  # PostgreSQL and Redis: on the event loop
                    async with decision_limiter():
                        made = await decisions.decide_async(command)
                else:
                    # A thread can't be interrupted: past the deadline the client is answered
                    # and the thread left to finish within its stores' own bounds, its outcome
                    # logged and not delivered (as on the event loop when the deadline falls
                    # after the audit append). The limiter still counts it until then.
                    made = await to_thread.run_sync(
                        decisions.decide,
                        command,
                        limiter=decision_limiter(),
                        abandon_on_cancel=True,
                    )
        except TimeoutError:  # the deadline's: the stages' own become ConsentUnavailable etc.
            raise Overloaded("the decision did not finish in time; nothing was delivered") from None
        finally:
            in_flight -= 1
        metrics.observe_decision(made.record)
        # Serialised here: the response was built and validated by its model just now, and
        # FastAPI would validate it all over again (the schema stays the declared model's).
        response = _response(made, c, who)
        return Response(response.model_dump_json(), media_type="application/json")

    app.router.add_api_route(
        "/v1/decisions",
        decide,
        methods=["POST"],
        response_model=DecisionResponse,
        responses=_errors(*_V1_ERRORS, *_BODY_ERRORS, 500, 503),
        route_class_override=_direct(DecisionRequest, DECIDING),
    )

    @app.get(
        "/v1/audit/decisions/{decision_id}",
        response_model=AuditEntry,
        responses=_errors(*_V1_ERRORS, 404, 500, 503),
    )
    def audit_record(decision_id: DecisionId, c: Wired, _: Auditing) -> dict[str, Any]:
        try:
            found = c.audit.get(decision_id)
        except Exception as error:
            log.error("audit read failed: %s", error)
            raise StoreUnavailable("the audit log cannot be read right now") from error
        if found is None:
            raise NotFound("no decision with that id")
        return found

    @app.get(
        "/v1/audit/verify",
        response_model=ChainVerified,
        responses=_errors(*_V1_ERRORS, 500, 503),
    )
    def audit_verify(c: Wired, _: Auditing) -> ChainVerified:
        try:
            result = c.audit.verify()
        except Exception as error:
            log.error("audit verification could not read the log: %s", error)
            raise StoreUnavailable("the audit log cannot be read right now") from error
        return ChainVerified(
            ok=result.ok,
            records=result.records,
            head_hash=result.head_hash,
            first_bad_seq=result.first_bad_seq,
            first_bad_decision=result.first_bad_decision,
            problem=result.problem,
        )

    def consents_of(c: Container, customer_id: str, history: bool = False) -> CustomerConsents:
        try:
            current = c.registry.current(customer_id)
            entries = c.registry.history(customer_id) if history else None
        except Exception as error:
            log.error("consent read failed: %s", error)
            raise StoreUnavailable("consent cannot be read right now") from error
        return CustomerConsents(
            customer_id=customer_id,
            consents=[ConsentOut.model_validate(r, from_attributes=True) for r in current.values()],
            note="purposes and channels not listed are unknown, which counts as no consent",
            history=None
            if entries is None
            else [ConsentOut.model_validate(r, from_attributes=True) for r in entries],
        )

    @app.get(
        "/v1/customers/{customer_id}/consents",
        response_model=CustomerConsents,
        responses=_errors(*_V1_ERRORS, 500, 503),
    )
    def get_consents(
        customer_id: CustomerId,
        c: Wired,
        _: ReadingConsent,
        history: Annotated[
            bool, Query(description="Add every entry, in the order written.")
        ] = False,
    ) -> CustomerConsents:
        return consents_of(c, customer_id, history)

    @app.put(
        "/v1/customers/{customer_id}/consents",
        response_model=CustomerConsents,
        responses=_errors(*_V1_ERRORS, *_BODY_ERRORS, 500, 503),
    )
    def put_consents(
        customer_id: CustomerId, body: ConsentsIn, c: Wired, principal: RecordingConsent
    ) -> CustomerConsents:
        """Rules (service/usecases/consent_writes.py): a withdrawal from any recording key; a grant
        from an RM key only for their own customers; ``recorded_by`` is the key."""
        choices = [RecordConsentChoice(**item.model_dump()) for item in body.consents]
        try:
            entries = consent_entries(
                customer_id,
                choices,
                principal,
                c.directory,
                c.settings.time_bounds,
                datetime.now(UTC),
            )
            c.registry.record(entries)
        except NextBestError:
            raise
        except Exception as error:
            log.error("consent write failed: %s", error)
            raise StoreUnavailable() from error
        return consents_of(c, customer_id)

    @app.delete(
        "/v1/customers/{customer_id}",
        response_model=CustomerErasedOut,
        responses=_errors(*_V1_ERRORS, 500, 503),
    )
    def erase(customer_id: CustomerId, c: Wired, who: Erasing) -> CustomerErasedOut:
        """Right to erasure: the customer's audit key, consent and contact history, directory
        entry, alerts, online and offline features and dead letters are deleted, and the
        customer is entered in the erasure register, so no replay brings them back; the
        erasure is in the audit log without the identity, and the chain still verifies."""
        try:
            erased = erase_customer(c, customer_id, f"{who.role}:{who.name}")
        except Exception as error:
            log.error("erasure failed: %s", error)
            raise StoreUnavailable("the erasure did not complete; run it again") from error
        return CustomerErasedOut(erased=True, **asdict(erased))

    @app.post(
        "/v1/feedback",
        status_code=202,
        response_model=FeedbackRecorded,
        responses=_errors(*_V1_ERRORS, *_BODY_ERRORS, 500, 503),
    )
    def feedback(body: FeedbackIn, c: Wired, principal: GivingFeedback) -> FeedbackRecorded:
        """What the customer saw and answered: it feeds contact caps, cool-offs and "already
        declined"."""
        action = c.catalog.actions.get(body.action_id)
        if action is None:
            raise InvalidRequest(f"unknown action {body.action_id!r}")
        now = datetime.now(UTC)
        reason = (
            None
            if body.occurred_at is None
            else c.settings.time_bounds.violation(body.occurred_at, now)
        )
        if reason is not None:
            raise InvalidRequest(
                f"occurred_at: {reason}", details=[{"field": "occurred_at", "reason": reason}]
            )
        try:
            known = c.directory.get(body.customer_id)
            c.contacts.record(
                [
                    ContactMade(
                        customer_id=body.customer_id,
                        occurred_at=body.occurred_at or now,
                        channel=body.channel,
                        kind=body.kind,
                        household_id=known.household_id if known else None,
                        action_id=action.id,
                        need=action.need,
                        decision_id=body.decision_id,
                        recorded_by=recorder(principal.role, principal.name),
                    )
                ]
            )
        except Exception as error:
            log.error("feedback write failed: %s", error)
            raise StoreUnavailable() from error
        return FeedbackRecorded(recorded=1)

    # The RM inbox: a page and its script, no build step. The page holds no data: it signs in
    # with the RM's key and reads /v1/alerts like any client.
    def static(name: str, media_type: str) -> Callable[[], Response]:
        content = resources.files("service.entrypoints").joinpath("static", name).read_bytes()

        def serve() -> Response:
            return Response(content, media_type=media_type, headers=_PAGE_HEADERS)

        return serve

    for path, name, media_type in (
        ("/rm", "rm.html", "text/html; charset=utf-8"),
        ("/rm/inbox.js", "inbox.js", "text/javascript; charset=utf-8"),
        ("/rm/inbox.css", "inbox.css", "text/css; charset=utf-8"),
    ):
        app.add_api_route(path, static(name, media_type), methods=["GET"], include_in_schema=False)

    @app.get(
        "/v1/alerts",
        response_model=AlertList,
        responses=_errors(*_V1_ERRORS, 500, 503),
    )
    def list_alerts(
        c: Wired,
        who: ReadingAlerts,
        rm_id: Annotated[RmId | None, Query()] = None,
        status: Annotated[AlertStatus | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> AlertList:
        """An RM's alerts, highest priority first. An RM sees their own (``rm_id`` defaults to
        theirs, another's is refused); compliance and admin see anyone's. Queued and open
        alerts pass the gate again first: one that no longer does is withdrawn. Only
        compliance reads a withdrawal's reason codes; an RM sees the withdrawn alerts they
        had been shown."""
        if who.role == "rm":
            if rm_id is not None and rm_id != who.rm_id:
                raise Forbidden("an RM sees only their own alerts")
            rm_id = who.rm_id
        try:
            # Expires what is overdue, opens what waited for capacity, asks the gate again.
            inbox = c.alert_inbox.alerts(rm_id, status, limit)
        except Exception as error:
            log.error("alerts read failed: %s", error)
            raise StoreUnavailable("the alerts cannot be read right now") from error
        return AlertList(alerts=shown_to(who.role, inbox.alerts), unchecked=inbox.unchecked)

    @app.post(
        "/v1/alerts/{alert_id}/disposition",
        response_model=Alert,
        responses=_errors(*_V1_ERRORS, *_BODY_ERRORS, 404, 409, 500, 503),
    )
    def dispose_alert(
        alert_id: Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)],
        body: DispositionIn,
        c: Wired,
        who: DisposingAlerts,
    ) -> Alert:
        """What the RM did with an open alert. It closes the alert, goes to contact history
        (declines start the action's cool-off) and becomes a training label. The alert passes
        the gate again first: a withdrawn one is refused with 409 and the reason."""
        try:
            alert = c.alert_store.get(alert_id)
        except Exception as error:
            log.error("alert read failed: %s", error)
            raise StoreUnavailable() from error
        if alert is None:
            raise NotFound("no alert with that id")
        if who.role == "rm" and alert.rm_id != who.rm_id:
            raise Forbidden("this alert belongs to another RM")
        try:
            done = c.alert_inbox.dispose(alert_id, body.outcome, who.name, body.note)
        except NextBestError:
            raise
        except Exception as error:
            log.error("disposition write failed: %s", error)
            raise StoreUnavailable() from error
        return done

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=EventsAccepted,
        responses=_errors(*_V1_ERRORS, *_BODY_ERRORS, 500, 503),
    )
    def post_events(body: EventsIn, c: Wired, who: SendingEvents) -> EventsAccepted:
        parsed, problems = [], []
        now = datetime.now(UTC)
        for index, raw in enumerate(body.events):
            try:
                event = parse_event(raw)
            except InvalidEvent as error:
                problems.append({"index": index, "problem": error.reason})
                continue
            # The stream would dead-letter it; over HTTP the sender hears it now.
            violation = c.settings.time_bounds.violation(event.occurred_at, now)
            if violation is not None:
                problems.append({"index": index, "problem": f"occurred_at: {violation}"})
            parsed.append(event)
        if problems:
            # All or nothing: a client can fix and resend the whole batch without duplicates.
            raise InvalidEvents(details=problems)
        if who.role not in CONSENT_EVENT_ROLES and any(
            isinstance(e, ConsentChangedEvent) for e in parsed
        ):
            raise Forbidden("this key's role may not send consent_changed events")
        # Every record carries its author: the worker keeps it (and dead letters show it).
        author = json.dumps({"name": who.name, "role": who.role}).encode()
        topic = settings.topic(EVENTS_TOPIC)
        # 202 only once the transport acknowledged every record; 503 within the bound.
        deadline = time.monotonic() + API_SEND_TIMEOUT_S
        try:
            with producer_lock:  # requests run in a thread pool; one producer for all
                producer = producer_holder.get("producer")
                if producer is None:
                    producer = producer_holder["producer"] = c.producer(API_SEND_TIMEOUT_S)
            for event in parsed:
                if time.monotonic() > deadline:
                    raise TimeoutError("the transport took too long to take the records")
                producer.send(
                    topic, event.customer_id, event_to_json(event), [(PRINCIPAL_HEADER, author)]
                )
            producer.flush(max(deadline - time.monotonic(), 0.01))
        except Exception as error:
            send_failures().labels("event").inc(len(parsed))
            log.error("event publish failed: %s", error)
            raise TransportUnavailable() from error
        return EventsAccepted(accepted=len(parsed))

    return app
