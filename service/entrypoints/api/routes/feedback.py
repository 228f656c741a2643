"""Feedback: what a customer was shown and how they answered."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from consent.stores.registry import recorder
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import BODY_ERRORS, V1_ERRORS, declared
from service.entrypoints.api.schemas import FeedbackIn, FeedbackRecorded
from service.entrypoints.api.security import GivingFeedback
from service.entrypoints.api.state import Wired
from service.errors import StoreUnavailable
from service.usecases.feedback import RecordFeedback, record_feedback

router = APIRouter()


@router.post(
    "/v1/feedback",
    status_code=202,
    response_model=FeedbackRecorded,
    responses=declared(*V1_ERRORS, *BODY_ERRORS, 500, 503),
)
def feedback(body: FeedbackIn, c: Wired, principal: GivingFeedback) -> FeedbackRecorded:
    """What the customer saw and answered: it feeds contact caps, cool-offs and "already
    declined"."""
    with unavailable("feedback write", StoreUnavailable()):
        record_feedback(
            RecordFeedback(**body.model_dump()),
            recorder(principal.role, principal.name),
            c.catalog,
            c.directory,
            c.contacts,
            c.settings.time_bounds,
            datetime.now(UTC),
        )
    return FeedbackRecorded(recorded=1)
