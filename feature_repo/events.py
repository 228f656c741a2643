"""The event contract (topic ``nextbest.events.v1``), defined once and imported everywhere.

Events are validated with pydantic; anything that does not validate is an ``InvalidEvent`` and
goes to the dead-letter topic with the reason, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_serializer,
)

from consent.rules.vocabulary import Channel, ConsentChannel, Need, Purpose

SCHEMA_VERSION: Literal[1] = 1

Product = Need | Literal["current_account"]
Page = Literal[
    "home",
    "mortgage_calculator",
    "property_listing",
    "fund_detail",
    "insurance_quote",
    "card_offer",
    "loan_calculator",
    "pension_info",
    "deposit_rates",
]
TransactionCategory = Literal[
    "salary",
    "transfer_in",
    "transfer_out",
    "card_purchase",
    "rent",
    "mortgage_payment",
    "investment_buy",
    "insurance_premium",
    "loan_repayment",
    "fee",
]

#: Ids from outside are restricted to this safe alphabet: no control characters, no
#: separators of our own stores' keys, nothing a log line or a terminal could misread.
SAFE_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
#: Free text from outside (a consent's source, a note): no control characters, which no store
#: keeps faithfully (PostgreSQL refuses NUL) and a log line or terminal could misread. A note
#: may break lines (``NOTE_PATTERN``).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
NOTE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
CustomerId = Annotated[str, Field(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]
EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=SAFE_ID_PATTERN)]

# RFC 3339 section 5.6 ``date-time``: a full date, ``T``, a full time with optional fractions
# and a mandatory offset (``Z`` or +hh:mm). Nothing else: no numbers (a Unix time), no naive
# times, no ISO 8601 variants such as week dates or a missing offset.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(?P<second>\d{2})(?P<fraction>\.\d+)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})$"
)


def _strict_rfc3339(value: object) -> object:
    """Refuse anything but an RFC 3339 string before pydantic's lenient parsing sees it (which
    takes ``0`` and ``"1700000000"`` as Unix times). A datetime object passes: it comes from
    our own code, not from the wire."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-11-29T05:28:27Z")
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-11-29T05:28:27Z")
    # More than microseconds cannot be kept; RFC 3339 allows any number of digits.
    fraction = (match["fraction"] or "")[:7]
    second = match["second"]
    if second == "60":  # a leap second: the instant is the last microsecond of its minute
        second, fraction = "59", ".999999"
    start = match.start("second")
    offset = match["offset"].upper()
    return f"{value[:start].upper()}{second}{fraction}{offset}"


#: A time from outside: an RFC 3339 string with an offset, nothing looser.
Rfc3339Time = Annotated[
    AwareDatetime,
    BeforeValidator(_strict_rfc3339),
    Field(json_schema_extra={"type": "string", "format": "date-time"}),
]


@dataclass(frozen=True)
class TimeBounds:
    """How far a time from outside may lie from the server's clock: ``ahead`` into the future
    (clock skew of devices and upstream systems) and ``behind`` into the past (the horizon of
    history the system still takes). One rule for the stream, the API and every loader."""

    ahead: timedelta = timedelta(minutes=5)
    behind: timedelta = timedelta(days=400)

    def violation(self, at: datetime, now: datetime | None = None) -> str | None:
        """Why ``at`` is out of bounds, or None when it is within them."""
        now = now or datetime.now(UTC)
        if at > now + self.ahead:
            return (
                f"time {at.astimezone(UTC).isoformat()} lies more than "
                f"{self.ahead.total_seconds():.0f} s in the future"
            )
        if at < now - self.behind:
            return (
                f"time {at.astimezone(UTC).isoformat()} lies more than "
                f"{self.behind.days} days in the past"
            )
        return None


#: An amount as the contract writes it: a decimal string, at most 16 digits and 2 decimals, no
#: sign, no exponent, no spaces. A JSON number is not taken: a float cannot carry cents exactly.
AMOUNT_PATTERN = r"^\d{1,16}(\.\d{1,2})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)


def _amount_string(value: object) -> object:
    """Refuse what pydantic's Decimal would otherwise take (numbers, ``"1e5"``, ``" 5 "``),
    so the event accepts exactly what its published schema allows."""
    if isinstance(value, Decimal):  # from our own code, not from the wire
        return value
    if not isinstance(value, str) or _AMOUNT.match(value) is None:
        raise ValueError('must be a decimal string such as "600000.00"')
    return value


def _json_integer(value: object) -> object:
    """An integer as JSON Schema counts one (``1`` or ``1.0``), and not what pydantic would
    also take for it (``true``, ``"1"``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise ValueError("must be an integer")
    return value


#: Put after an ``int``'s constraints (``Annotated[int, Field(ge=1), JSON_INTEGER]``; placed
#: before them it hides them from the JSON schema): takes integers exactly as the published
#: schema's ``integer`` allows them.
JSON_INTEGER = BeforeValidator(_json_integer)


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount_string),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN}),
]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransactionPayload(_Payload):
    amount: Amount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    direction: Literal["credit", "debit"]
    category: TransactionCategory

    @field_serializer("amount")
    def _amount_as_string(self, amount: Decimal) -> str:
        return f"{amount:.2f}"


class PageViewPayload(_Payload):
    page: Page
    seconds: Annotated[StrictFloat, Field(ge=0, le=86_400)] = 0.0


class LoginPayload(_Payload):
    method: Annotated[str, Field(max_length=32, pattern=TEXT_PATTERN)] = "password"


class ApplicationPayload(_Payload):
    product: Product
    status: Literal["started", "submitted", "approved", "declined"]


class ProductPayload(_Payload):
    product: Product


class ContactPayload(_Payload):
    reason: Literal["complaint", "enquiry", "service"]
    channel: Channel


class ProfileUpdatePayload(_Payload):
    changed: Annotated[
        list[Annotated[str, Field(max_length=64, pattern=TEXT_PATTERN)]], Field(max_length=32)
    ]


class ConsentPayload(_Payload):
    """A consent choice recorded elsewhere (app settings, branch form, RM): the registry
    appends it as history."""

    purpose: Purpose
    channel: ConsentChannel
    granted: StrictBool
    source: Annotated[str, Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)]
    notice_version: Annotated[str, Field(min_length=1, max_length=32, pattern=TEXT_PATTERN)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    customer_id: CustomerId
    occurred_at: Rfc3339Time
    channel: Channel
    schema_version: Annotated[Literal[1], BeforeValidator(_json_integer)] = SCHEMA_VERSION

    @field_serializer("occurred_at")
    def _rfc3339(self, occurred_at: datetime) -> str:
        return occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TransactionEvent(_EventBase):
    type: Literal["transaction"]
    payload: TransactionPayload


class PageViewEvent(_EventBase):
    type: Literal["page_view"]
    payload: PageViewPayload


class LoginEvent(_EventBase):
    type: Literal["login"]
    payload: LoginPayload = LoginPayload()


class ApplicationEvent(_EventBase):
    type: Literal["application"]
    payload: ApplicationPayload


class ProductOpenedEvent(_EventBase):
    type: Literal["product_opened"]
    payload: ProductPayload


class ProductClosedEvent(_EventBase):
    type: Literal["product_closed"]
    payload: ProductPayload


class ContactEvent(_EventBase):
    type: Literal["contact"]
    payload: ContactPayload


class ProfileUpdateEvent(_EventBase):
    type: Literal["profile_update"]
    payload: ProfileUpdatePayload


class ConsentChangedEvent(_EventBase):
    """Not behaviour: the stream records it in the consent registry, not in features."""

    type: Literal["consent_changed"]
    payload: ConsentPayload


Event = Annotated[
    TransactionEvent
    | PageViewEvent
    | LoginEvent
    | ApplicationEvent
    | ProductOpenedEvent
    | ProductClosedEvent
    | ContactEvent
    | ProfileUpdateEvent
    | ConsentChangedEvent,
    Field(discriminator="type"),
]

_EVENT = TypeAdapter(Event)

#: Every event type, in the contract's order; and those that are behaviour (features are made
#: of them; consent changes go to the consent registry).
EVENT_TYPES: tuple[str, ...] = tuple(
    get_args(kind.model_fields["type"].annotation)[0] for kind in get_args(get_args(Event)[0])
)
BEHAVIOUR_EVENT_TYPES: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t != "consent_changed")


class InvalidEvent(ValueError):
    """An event that does not satisfy the contract; ``reason`` is safe to publish to the DLQ."""

    code = "invalid_event"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)[:1000]


def parse_event(raw: bytes | str | dict[str, Any]) -> Event:
    """Parse and validate one event; raises ``InvalidEvent`` with a readable reason."""
    try:
        if isinstance(raw, dict):
            return _EVENT.validate_python(raw)
        return _EVENT.validate_json(raw)
    except ValidationError as error:
        raise InvalidEvent(_describe(error)) from None


def event_to_json(event: Event) -> bytes:
    return event.model_dump_json().encode()
