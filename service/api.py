"""The HTTP API (FastAPI). Thin: requests are validated here, the work happens in the domain."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from consent.contacts import ContactMade
from consent.model import ConsentGiven, ContactChannel, Purpose
from feature_repo.events import CustomerId, InvalidEvent, event_to_json, parse_event
from service import __version__
from service.auth import Principal, Role
from service.bootstrap import Container
from service.decisions import DecideForCustomer, DecisionMade
from service.erasure import erase_customer
from service.errors import (
    Forbidden,
    InvalidEvents,
    InvalidRequest,
    NextBestError,
    NotFound,
    StoreUnavailable,
    TransportUnavailable,
    Unauthenticated,
)
from service.models import ModelRefresher
from service.transport import EVENTS_TOPIC

log = logging.getLogger(__name__)

MAX_EVENTS_PER_REQUEST = 500
#: A consent choice may carry its own time (recorded elsewhere first), but not a future one:
#: the latest choice wins, and a future time would pin it.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionContext(_Request):
    page: Annotated[str, Field(max_length=64)] | None = None
    event_id: Annotated[str, Field(max_length=128)] | None = None


class DecisionRequest(_Request):
    customer_id: CustomerId
    channel: ContactChannel
    limit: Annotated[int, Field(ge=1, le=10)] = 3
    context: DecisionContext = DecisionContext()


class ReasonOut(BaseModel):
    feature: str
    value: float | None
    contribution: float


class ActionOut(BaseModel):
    action_id: str
    title: str
    need: str | None
    kind: str
    score: float | None
    value: float
    priority: float
    reasons: list[ReasonOut]


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
    policy_version: str
    models: dict[str, str]
    audit_seq: int
    audit_hash: str


class ConsentIn(_Request):
    purpose: Purpose
    channel: ContactChannel | None = Field(None, description="Omit for profiling.")
    granted: bool
    source: Annotated[str, Field(min_length=1, max_length=64)]
    notice_version: Annotated[str, Field(min_length=1, max_length=32)]
    recorded_at: AwareDatetime | None = None


class ConsentsIn(_Request):
    consents: Annotated[list[ConsentIn], Field(min_length=1, max_length=50)]


class FeedbackIn(_Request):
    customer_id: CustomerId
    action_id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    channel: ContactChannel
    kind: Literal["impression", "accept", "decline", "dismiss"]
    decision_id: Annotated[str, Field(max_length=64)] | None = None
    occurred_at: AwareDatetime | None = None


class EventsIn(_Request):
    events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(status_code=status, content=body)


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
                reasons=[
                    ReasonOut(
                        feature=r.feature, value=r.value, contribution=round(r.contribution, 4)
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
    return DecisionResponse(
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


def get_container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


Wired = Annotated[Container, Depends(get_container)]
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)
_BEARER = HTTPBearer(auto_error=False)


def authenticated(
    c: Wired,
    key: Annotated[str | None, Security(_API_KEY)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> Principal:
    principal = c.keyring.authenticate(key or (bearer.credentials if bearer else None))
    if principal is None:
        raise Unauthenticated()
    return principal


def allow(*roles: Role) -> Any:
    """A dependency that lets only ``roles`` through (403 for the others)."""

    def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if principal.role not in roles:
            raise Forbidden()
        return principal

    return Depends(check)


Deciding = Annotated[Principal, allow("channel", "rm", "compliance")]
Auditing = Annotated[Principal, allow("compliance")]
ReadingConsent = Annotated[Principal, allow("channel", "rm", "compliance")]
RecordingConsent = Annotated[Principal, allow("channel", "rm")]
SendingEvents = Annotated[Principal, allow("channel", "admin")]
GivingFeedback = Annotated[Principal, allow("channel", "rm")]
Erasing = Annotated[Principal, allow("compliance")]


def create_app(container: Container) -> FastAPI:
    producer_holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        refresher = ModelRefresher(container.models, container.settings.model_refresh_seconds)
        refresher.start()
        try:
            yield
        finally:
            refresher.stop()
        producer = producer_holder.pop("producer", None)
        if producer is not None:
            producer.close()

    app = FastAPI(title="NextBest", version=__version__, docs_url="/docs", lifespan=lifespan)
    app.state.container = container

    @app.exception_handler(NextBestError)
    async def _nextbest_error(_: Request, error: NextBestError) -> JSONResponse:
        return _error(error.status, error.code, error.message, error.details)

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

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz")
    def readyz(c: Wired) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            with c.engine.connect() as connection:
                connection.exec_driver_sql("select 1")
            checks["operational_store"] = "ok"
        except Exception:
            checks["operational_store"] = "unavailable"
        versions = c.models.versions()
        checks["models"] = ",".join(f"{n}@{v}" for n, v in sorted(versions.items())) or "none"
        ready = checks["operational_store"] == "ok"
        return JSONResponse(status_code=200 if ready else 503, content={"ready": ready, **checks})

    @app.post("/v1/decisions", response_model=DecisionResponse)
    async def decide(body: DecisionRequest, c: Wired, who: Deciding) -> DecisionResponse:
        command = DecideForCustomer(
            customer_id=body.customer_id,
            channel=body.channel,
            limit=body.limit,
            context=body.context.model_dump(exclude_none=True),
        )
        made = await run_in_threadpool(c.decisions.decide, command)
        return _response(made, c, who)

    @app.get("/v1/audit/decisions/{decision_id}")
    def audit_record(
        decision_id: Annotated[str, Field(max_length=64)], c: Wired, _: Auditing
    ) -> dict[str, Any]:
        found = c.audit.get(decision_id)
        if found is None:
            raise NotFound("no decision with that id")
        return found

    @app.get("/v1/audit/verify")
    def audit_verify(c: Wired, _: Auditing) -> dict[str, Any]:
        result = c.audit.verify()
        return {
            "ok": result.ok,
            "records": result.records,
            "head_hash": result.head_hash,
            "first_bad_seq": result.first_bad_seq,
            "first_bad_decision": result.first_bad_decision,
            "problem": result.problem,
        }

    @app.get("/v1/customers/{customer_id}/consents")
    def get_consents(customer_id: CustomerId, c: Wired, _: ReadingConsent) -> dict[str, Any]:
        current = c.registry.current(customer_id)
        return {
            "customer_id": customer_id,
            "consents": [r.model_dump(mode="json") for r in current.values()],
            "note": "purposes and channels not listed are unknown, which counts as no consent",
        }

    @app.put("/v1/customers/{customer_id}/consents")
    def put_consents(
        customer_id: CustomerId, body: ConsentsIn, c: Wired, who: RecordingConsent
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        entries = []
        for item in body.consents:
            if item.recorded_at is not None and item.recorded_at > now + MAX_CLOCK_SKEW:
                raise InvalidRequest("recorded_at lies in the future")
            channel = item.channel or "any"
            if (item.purpose == "profiling") != (channel == "any"):
                raise InvalidRequest(
                    "profiling consent takes no channel; marketing and service consents need one"
                )
            entries.append(
                ConsentGiven(
                    customer_id=customer_id,
                    purpose=item.purpose,
                    channel=channel,
                    granted=item.granted,
                    recorded_at=item.recorded_at or now,
                    source=item.source,
                    notice_version=item.notice_version,
                )
            )
        try:
            c.registry.record(entries)
        except Exception as error:
            log.error("consent write failed: %s", error)
            raise StoreUnavailable() from error
        return get_consents(customer_id, c, who)

    @app.delete("/v1/customers/{customer_id}")
    def erase(customer_id: CustomerId, c: Wired, _: Erasing) -> dict[str, Any]:
        """Right to erasure: the customer's audit key, consent and contact history, directory
        entry and online features are deleted; the audit chain still verifies."""
        try:
            erased = erase_customer(c, customer_id)
        except Exception as error:
            log.error("erasure failed: %s", error)
            raise StoreUnavailable("the erasure did not complete; run it again") from error
        return {"erased": True, **asdict(erased)}

    @app.post("/v1/feedback", status_code=202)
    def feedback(body: FeedbackIn, c: Wired, _: GivingFeedback) -> dict[str, Any]:
        """What the customer saw and answered: it feeds contact caps, cool-offs and "already
        declined"."""
        action = c.catalog.actions.get(body.action_id)
        if action is None:
            raise InvalidRequest(f"unknown action {body.action_id!r}")
        now = datetime.now(UTC)
        if body.occurred_at is not None and body.occurred_at > now + MAX_CLOCK_SKEW:
            raise InvalidRequest("occurred_at lies in the future")
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
                    )
                ]
            )
        except Exception as error:
            log.error("feedback write failed: %s", error)
            raise StoreUnavailable() from error
        return {"recorded": 1}

    @app.post("/v1/events", status_code=202)
    def post_events(body: EventsIn, c: Wired, _: SendingEvents) -> dict[str, Any]:
        parsed, problems = [], []
        for index, raw in enumerate(body.events):
            try:
                parsed.append(parse_event(raw))
            except InvalidEvent as error:
                problems.append({"index": index, "problem": error.reason})
        if problems:
            # All or nothing: a client can fix and resend the whole batch without duplicates.
            raise InvalidEvents(details=problems)
        producer = producer_holder.get("producer")
        if producer is None:
            producer = producer_holder["producer"] = c.producer()
        topic = c.settings.topic(EVENTS_TOPIC)
        try:
            for event in parsed:
                producer.send(topic, event.customer_id, event_to_json(event))
            producer.flush()
        except Exception as error:
            log.error("event publish failed: %s", error)
            raise TransportUnavailable() from error
        return {"accepted": len(parsed)}

    return app
