"""Recording feedback: what a customer was shown and how they answered.

It goes to contact history, where it feeds contact caps, cool-offs and "already declined". The
action must be one of the catalog's, and a time the client gives must lie within the server's
time bounds; the entry keeps the key that reported it (``recorded_by``), never a name from the
request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from consent.rules.catalog import Catalog
from consent.rules.model import ContactKind
from consent.stores.contacts import ContactHistory, ContactMade
from consent.stores.customers import CustomerDirectory
from feature_repo.events import TimeBounds
from service.errors import InvalidRequest


@dataclass(frozen=True)
class RecordFeedback:
    """A client reports what the customer saw and answered."""

    customer_id: str
    action_id: str
    channel: str
    kind: ContactKind
    decision_id: str | None = None
    #: When it happened, if before now.
    occurred_at: datetime | None = None


def record_feedback(
    command: RecordFeedback,
    recorded_by: str,
    catalog: Catalog,
    directory: CustomerDirectory,
    contacts: ContactHistory,
    bounds: TimeBounds,
    now: datetime,
) -> ContactMade:
    """Append the contact ``command`` reports (``InvalidRequest`` for an unknown action or a
    time out of bounds, before anything is read or written)."""
    action = catalog.actions.get(command.action_id)
    if action is None:
        raise InvalidRequest(f"unknown action {command.action_id!r}")
    reason = None if command.occurred_at is None else bounds.violation(command.occurred_at, now)
    if reason is not None:
        raise InvalidRequest(
            f"occurred_at: {reason}", details=[{"field": "occurred_at", "reason": reason}]
        )
    known = directory.get(command.customer_id)
    contact = ContactMade(
        customer_id=command.customer_id,
        occurred_at=command.occurred_at or now,
        channel=command.channel,
        kind=command.kind,
        household_id=known.household_id if known else None,
        action_id=action.id,
        need=action.need,
        decision_id=command.decision_id,
        recorded_by=recorded_by,
    )
    contacts.record([contact])
    return contact
