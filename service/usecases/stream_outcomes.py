"""The events that are outcomes for the lift report (``consent/stores/outcomes.py``): an
application started or submitted, a product opened, a complaint, and a withdrawal of marketing
consent (an opt-out)."""

from __future__ import annotations

from collections.abc import Iterable

from consent.stores.outcomes import Outcome
from feature_repo.events import (
    ApplicationEvent,
    ConsentChangedEvent,
    ContactEvent,
    Event,
    ProductOpenedEvent,
)

#: An application's later statuses (approved, declined) are the bank's answer, not the
#: customer's act: the conversion is when she applied.
APPLIED = frozenset({"started", "submitted"})


def outcomes_of(events: Iterable[Event]) -> list[Outcome]:
    out = []
    for event in events:
        found = _outcome(event)
        if found is not None:
            out.append(found)
    return out


def _outcome(event: Event) -> Outcome | None:
    base = (event.event_id, event.customer_id, event.occurred_at)
    if isinstance(event, ApplicationEvent) and event.payload.status in APPLIED:
        return Outcome(*base, "application", _need(event.payload.product), event.channel)
    if isinstance(event, ProductOpenedEvent):
        return Outcome(*base, "product_opened", _need(event.payload.product), event.channel)
    if isinstance(event, ContactEvent) and event.payload.reason == "complaint":
        return Outcome(*base, "complaint", None, event.payload.channel)
    if (
        isinstance(event, ConsentChangedEvent)
        and not event.payload.granted
        and event.payload.purpose == "marketing"
    ):
        return Outcome(*base, "opt_out", None, event.payload.channel)
    return None


def _need(product: str) -> str | None:
    return None if product == "current_account" else product
