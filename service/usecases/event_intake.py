"""Taking a batch of events from a client: checked as the stream would check them, then handed
to the transport.

All or nothing: one event that breaks the contract or the time bounds refuses the batch
(``InvalidEvents``, naming each), so a client can fix and resend it whole without duplicates.
Every record carries its author (the sending key), which the worker keeps and dead letters show.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from feature_repo.events import (
    ConsentChangedEvent,
    Event,
    InvalidEvent,
    TimeBounds,
    event_to_json,
    parse_event,
)
from service.adapters.deadletter import PRINCIPAL_HEADER
from service.adapters.metrics import send_failures
from service.adapters.transport import Producer
from service.entrypoints.auth import Principal, Role
from service.errors import Forbidden, InvalidEvents

#: Who may send ``consent_changed`` events: the channels' backends, relaying the choices their
#: customers made in the app, on the web or at a branch. Not admin (operations), nor rm,
#: compliance (they record consent through ``PUT /v1/customers/{id}/consents``, with their
#: key as its author, or not at all).
CONSENT_EVENT_ROLES: tuple[Role, ...] = ("channel",)


def checked_events(
    batch: Iterable[dict[str, Any]], role: Role, bounds: TimeBounds, now: datetime
) -> list[Event]:
    """The batch's events, or the error that refuses them all."""
    parsed: list[Event] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(batch):
        try:
            event = parse_event(raw)
        except InvalidEvent as error:
            problems.append({"index": index, "problem": error.reason})
            continue
        # The stream would dead-letter it; over HTTP the sender hears it now.
        violation = bounds.violation(event.occurred_at, now)
        if violation is not None:
            problems.append({"index": index, "problem": f"occurred_at: {violation}"})
        parsed.append(event)
    if problems:
        raise InvalidEvents(details=problems)
    if role not in CONSENT_EVENT_ROLES and any(isinstance(e, ConsentChangedEvent) for e in parsed):
        raise Forbidden("this key's role may not send consent_changed events")
    return parsed


def publish_events(
    events: Sequence[Event],
    sender: Principal,
    producer: Callable[[], Producer],
    topic: str,
    timeout_s: float,
) -> None:
    """Send ``events`` and return once the transport acknowledged every one, within
    ``timeout_s`` in all; otherwise raise (and count them as failed sends)."""
    author = json.dumps({"name": sender.name, "role": sender.role}).encode()
    deadline = time.monotonic() + timeout_s
    try:
        transport = producer()
        for event in events:
            if time.monotonic() > deadline:
                raise TimeoutError("the transport took too long to take the records")
            transport.send(
                topic, event.customer_id, event_to_json(event), [(PRINCIPAL_HEADER, author)]
            )
        transport.flush(max(deadline - time.monotonic(), 0.01))
    except Exception:
        send_failures().labels("event").inc(len(events))
        raise


def accept_events(
    batch: Sequence[dict[str, Any]],
    sender: Principal,
    bounds: TimeBounds,
    now: datetime,
    producer: Callable[[], Producer],
    topic: str,
    timeout_s: float,
) -> int:
    """Check the batch, then publish it (``checked_events``, ``publish_events``); how many
    events were accepted."""
    events = checked_events(batch, sender.role, bounds, now)
    publish_events(events, sender, producer, topic, timeout_s)
    return len(events)
