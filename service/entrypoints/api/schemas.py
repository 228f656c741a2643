"""The API's request and response models: the shapes the OpenAPI document publishes.

Requests forbid unknown fields and bound every string and list; each error response has the
shape of ``ErrorResponse``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from consent.rules.vocabulary import ConsentChannel, ContactChannel, Purpose
from feature_repo.events import (
    JSON_INTEGER,
    NOTE_PATTERN,
    TEXT_PATTERN,
    CustomerId,
    Rfc3339Time,
)
from service.errors import ErrorCode
from service.usecases.alert_model import Alert, Outcome

MAX_EVENTS_PER_REQUEST = 500
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
    signed_checkpoints: int = Field(description="Published signed checkpoints checked.")
    covered: int = Field(description="Records covered by the newest checkpoint that holds.")
    covered_at: str | None = Field(description="When that checkpoint was signed (UTC).")
    rejected: list[str] = Field(description="Published documents that are not good checkpoints.")
    unreadable: list[str] = Field(description="Sinks that could not be read.")


class ProvenRecord(BaseModel):
    seq: int
    decision_id: str
    recorded_at: str
    customer_ref: str
    body: str = Field(description="The record's stored JSON text, byte for byte as hashed.")


class InclusionProof(BaseModel):
    """What ``verify_audit.py inclusion`` checks, as it is: save the answer and run it."""

    record: ProvenRecord
    leaf_hash: str = Field(description="SHA-256(0x00 || header + newline + body), base64.")
    leaf_index: int = Field(description="The record's place in the tree: its seq - 1.")
    tree_size: int
    proof: list[str] = Field(description="RFC 9162 inclusion proof, base64 hashes.")
    checkpoint: str = Field(description="The signed checkpoint (C2SP signed note) proved to.")


class ConsistencyProof(BaseModel):
    """What ``verify_audit.py consistency`` checks, as it is."""

    old: str = Field(description="The earlier signed checkpoint.")
    new: str = Field(description="The later signed checkpoint.")
    proof: list[str] = Field(description="RFC 9162 consistency proof, base64 hashes.")


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
    outcome_events: int


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
