"""Events from the bank's systems, onto the stream."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from service.adapters.transport import API_SEND_TIMEOUT_S, EVENTS_TOPIC
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import BODY_ERRORS, V1_ERRORS, declared
from service.entrypoints.api.schemas import EventsAccepted, EventsIn
from service.entrypoints.api.security import SendingEvents
from service.entrypoints.api.state import Sharing
from service.errors import TransportUnavailable
from service.usecases.event_intake import accept_events

router = APIRouter()


@router.post(
    "/v1/events",
    status_code=202,
    response_model=EventsAccepted,
    responses=declared(*V1_ERRORS, *BODY_ERRORS, 500, 503),
)
def post_events(body: EventsIn, process: Sharing, who: SendingEvents) -> EventsAccepted:
    # 202 only once the transport acknowledged every record; 503 within the bound.
    settings = process.container.settings
    with unavailable("event publish", TransportUnavailable()):
        accepted = accept_events(
            body.events,
            who,
            settings.time_bounds,
            datetime.now(UTC),
            process.events_producer.get,
            settings.topic(EVENTS_TOPIC),
            API_SEND_TIMEOUT_S,
        )
    return EventsAccepted(accepted=accepted)
