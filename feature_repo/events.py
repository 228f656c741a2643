"""The event contract (topic ``nextbest.events.v1``), defined once and imported everywhere.

Events are validated with pydantic; anything that does not validate is an ``InvalidEvent`` and
goes to the dead-letter topic with the reason, never silently dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_serializer,
)

SCHEMA_VERSION: Literal[1] = 1

Channel = Literal["mobile_app", "web", "email", "sms", "phone", "rm", "branch", "core_banking"]
Need = Literal[
    "mortgage",
    "investment",
    "protection",
    "credit_card",
    "personal_loan",
    "term_deposit",
    "pension",
]
#: The needs models score, in a fixed order (used for codes and feature names).
NEEDS: tuple[str, ...] = get_args(Need)
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

CustomerId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
EventId = Annotated[str, Field(min_length=1, max_length=128)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TransactionPayload(_Payload):
    amount: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    direction: Literal["credit", "debit"]
    category: TransactionCategory

    @field_serializer("amount")
    def _amount_as_string(self, amount: Decimal) -> str:
        return f"{amount:.2f}"


class PageViewPayload(_Payload):
    page: Page
    seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0


class LoginPayload(_Payload):
    method: Annotated[str, Field(max_length=32)] = "password"


class ApplicationPayload(_Payload):
    product: Product
    status: Literal["started", "submitted", "approved", "declined"]


class ProductPayload(_Payload):
    product: Product


class ContactPayload(_Payload):
    reason: Literal["complaint", "enquiry", "service"]
    channel: Channel


class ProfileUpdatePayload(_Payload):
    changed: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=32)]


class ConsentPayload(_Payload):
    """A consent choice recorded elsewhere (app settings, branch form, RM): the registry
    appends it as history."""

    purpose: Literal["marketing", "profiling", "service"]
    channel: Literal["mobile_app", "web", "email", "sms", "phone", "rm", "branch", "any"]
    granted: bool
    source: Annotated[str, Field(min_length=1, max_length=64)]
    notice_version: Annotated[str, Field(min_length=1, max_length=32)]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: EventId
    customer_id: CustomerId
    occurred_at: AwareDatetime
    channel: Channel
    schema_version: Literal[1] = SCHEMA_VERSION

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


def event_as_dict(event: Event) -> dict[str, Any]:
    return json.loads(event.model_dump_json())
