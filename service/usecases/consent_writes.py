"""Recording a customer's consent choices through the API: who may, and what is kept.

The rules (also in ``service/entrypoints/auth.py`` and the README):

- Only ``channel`` and ``rm`` keys record consents (the routes' roles).
- Every entry keeps the key that recorded it (``recorded_by``: ``<role>:<key name>``), set
  here from the authenticated key, never from the request; ``source`` is the client's own label
  of where the choice was captured (``app_settings``, ``branch_form``).
- A withdrawal is taken from every recording key, for any customer: refusing one is never the
  safe side.
- A grant from an ``rm`` key only for a customer that relationship manager manages (the
  directory's ``rm_id``): an RM cannot opt someone else's customer in. A ``channel`` key acts
  for the customer signed in to the bank's app, web or contact centre, and may grant.
- The bank records each entry now (``recorded_at``, what orders the history); the time the
  client says the customer gave it is kept as ``given_at``, within the server's time bounds.

Consent events on the stream (``stream_entries``) are recorded the same way: now, with the
event's time as ``given_at``, once per event id, by the key that sent them through
``POST /v1/events`` (only ``channel`` keys may) or by ``stream`` when a producer wrote them to the
topic itself (Kafka's ACLs decide who may).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from consent.rules.model import ConsentGiven
from consent.rules.vocabulary import ANY_CHANNEL, Purpose
from consent.stores.customers import CustomerDirectory
from consent.stores.registry import STREAM_RECORDER, ConsentRegistry, recorder
from feature_repo.events import ConsentChangedEvent, Event, TimeBounds
from service.entrypoints.auth import Principal
from service.errors import Forbidden, InvalidRequest


@dataclass(frozen=True)
class RecordConsentChoice:
    """A client asks to record one choice of the customer."""

    purpose: Purpose
    channel: str | None
    granted: bool
    source: str
    notice_version: str
    given_at: datetime | None = None


def consent_entries(
    customer_id: str,
    choices: Sequence[RecordConsentChoice],
    principal: Principal,
    directory: CustomerDirectory,
    bounds: TimeBounds,
    now: datetime,
) -> list[ConsentGiven]:
    """The history entries for ``choices``, or the error that refuses them all (nothing is
    recorded when one choice is refused)."""
    entries = []
    for index, choice in enumerate(choices):
        if choice.given_at is not None:
            reason = bounds.violation(choice.given_at, now)
            if reason is not None:
                raise InvalidRequest(
                    f"consents[{index}].given_at: {reason}",
                    details=[{"field": f"consents.{index}.given_at", "reason": reason}],
                )
        channel = choice.channel or ANY_CHANNEL
        if (choice.purpose == "profiling") != (channel == ANY_CHANNEL):
            raise InvalidRequest(
                "profiling consent takes no channel; marketing and service consents need one"
            )
        entries.append(
            ConsentGiven(
                customer_id=customer_id,
                purpose=choice.purpose,
                channel=channel,  # type: ignore[arg-type]  # ContactChannel, checked by the model
                granted=choice.granted,
                recorded_at=now,
                given_at=choice.given_at or now,
                source=choice.source,
                notice_version=choice.notice_version,
                recorded_by=recorder(principal.role, principal.name),
            )
        )
    if principal.role == "rm" and any(e.granted for e in entries):
        known = directory.get(customer_id)
        if known is None or known.rm_id != principal.rm_id:
            raise Forbidden(
                "a relationship manager may record a grant only for their own customers; "
                "withdrawals are taken for anyone"
            )
    return entries


def stream_entries(events: Iterable[tuple[Event, str | None]], now: datetime) -> list[ConsentGiven]:
    """The history entries for the consent events among ``events`` (each with the key that
    sent it, if it came through the API: ``<role>:<key name>``), recorded at ``now`` (the
    worker's clock), each carrying its event id so that it is recorded once."""
    return [
        ConsentGiven(
            customer_id=e.customer_id,
            purpose=e.payload.purpose,
            channel=e.payload.channel,
            granted=e.payload.granted,
            recorded_at=now,
            given_at=e.occurred_at,
            source=e.payload.source,
            notice_version=e.payload.notice_version,
            recorded_by=(sender or STREAM_RECORDER)[:80],
            event_id=e.event_id,
        )
        for e, sender in events
        if isinstance(e, ConsentChangedEvent)
    ]


def record_consent_choices(
    registry: ConsentRegistry,
    directory: CustomerDirectory,
    bounds: TimeBounds,
    customer_id: str,
    choices: Sequence[RecordConsentChoice],
    principal: Principal,
    now: datetime,
) -> list[ConsentGiven]:
    """Record ``choices`` under ``consent_entries``' rules: all of them, or none when one is
    refused."""
    entries = consent_entries(customer_id, choices, principal, directory, bounds, now)
    registry.record(entries)
    return entries
