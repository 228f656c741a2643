"""A customer as a whole: the right to erasure."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from consent.stores.registry import recorder
from feature_repo.events import CustomerId
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import V1_ERRORS, declared
from service.entrypoints.api.schemas import CustomerErasedOut
from service.entrypoints.api.security import Erasing
from service.entrypoints.api.state import Wired
from service.errors import StoreUnavailable
from service.usecases.erasure import erase_customer

router = APIRouter()


@router.delete(
    "/v1/customers/{customer_id}",
    response_model=CustomerErasedOut,
    responses=declared(*V1_ERRORS, 500, 503),
)
def erase(customer_id: CustomerId, c: Wired, who: Erasing) -> CustomerErasedOut:
    """Right to erasure: the customer's audit key, consent and contact history, directory
    entry, alerts, online and offline features and dead letters are deleted, and the
    customer is entered in the erasure register, so no replay brings them back; the
    erasure is in the audit log without the identity, and the chain still verifies."""
    failed = StoreUnavailable("the erasure did not complete; run it again")
    with unavailable("erasure", failed):
        erased = erase_customer(c, customer_id, recorder(who.role, who.name))
    return CustomerErasedOut(erased=True, **asdict(erased))
