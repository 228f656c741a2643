"""A customer's consents: read them (current, or every entry) and record their choices."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from feature_repo.events import CustomerId
from service.bootstrap import Container
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import BODY_ERRORS, V1_ERRORS, declared
from service.entrypoints.api.schemas import ConsentOut, ConsentsIn, CustomerConsents
from service.entrypoints.api.security import ReadingConsent, RecordingConsent
from service.entrypoints.api.state import Wired
from service.errors import StoreUnavailable
from service.usecases.consent_writes import RecordConsentChoice, record_consent_choices
from service.usecases.score_keeping import forget_withdrawn

log = logging.getLogger(__name__)
router = APIRouter()


def _consents_of(c: Container, customer_id: str, history: bool = False) -> CustomerConsents:
    with unavailable("consent read", StoreUnavailable("consent cannot be read right now")):
        current = c.registry.current(customer_id)
        entries = c.registry.history(customer_id) if history else None
    return CustomerConsents(
        customer_id=customer_id,
        consents=[ConsentOut.model_validate(r, from_attributes=True) for r in current.values()],
        note="purposes and channels not listed are unknown, which counts as no consent",
        history=None
        if entries is None
        else [ConsentOut.model_validate(r, from_attributes=True) for r in entries],
    )


@router.get(
    "/v1/customers/{customer_id}/consents",
    response_model=CustomerConsents,
    responses=declared(*V1_ERRORS, 500, 503),
)
def get_consents(
    customer_id: CustomerId,
    c: Wired,
    _: ReadingConsent,
    history: Annotated[bool, Query(description="Add every entry, in the order written.")] = False,
) -> CustomerConsents:
    return _consents_of(c, customer_id, history)


@router.put(
    "/v1/customers/{customer_id}/consents",
    response_model=CustomerConsents,
    responses=declared(*V1_ERRORS, *BODY_ERRORS, 500, 503),
)
def put_consents(
    customer_id: CustomerId, body: ConsentsIn, c: Wired, principal: RecordingConsent
) -> CustomerConsents:
    """Rules (service/usecases/consent_writes.py): a withdrawal from any recording key; a grant
    from an RM key only for their own customers; ``recorded_by`` is the key."""
    choices = [RecordConsentChoice(**item.model_dump()) for item in body.consents]
    with unavailable("consent write", StoreUnavailable()):
        entries = record_consent_choices(
            c.registry,
            c.directory,
            c.settings.time_bounds,
            customer_id,
            choices,
            principal,
            datetime.now(UTC),
        )
    try:
        forget_withdrawn(c.features.online, entries)
    except Exception as error:  # the choice is recorded; kept scores are unused without it
        log.warning("kept scores not dropped after a withdrawal: %s", error)
    return _consents_of(c, customer_id)
