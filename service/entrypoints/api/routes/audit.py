"""The audit log, for compliance: one decision's record, and the chain's verification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from feature_repo.events import SAFE_ID_PATTERN
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import V1_ERRORS, declared
from service.entrypoints.api.schemas import AuditEntry, ChainVerified
from service.entrypoints.api.security import Auditing
from service.entrypoints.api.state import Wired
from service.errors import NotFound, StoreUnavailable

DecisionId = Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]

UNREADABLE = "the audit log cannot be read right now"

router = APIRouter()


@router.get(
    "/v1/audit/decisions/{decision_id}",
    response_model=AuditEntry,
    responses=declared(*V1_ERRORS, 404, 500, 503),
)
def audit_record(decision_id: DecisionId, c: Wired, _: Auditing) -> dict[str, Any]:
    with unavailable("audit read", StoreUnavailable(UNREADABLE)):
        found = c.audit.get(decision_id)
    if found is None:
        raise NotFound("no decision with that id")
    return found


@router.get(
    "/v1/audit/verify",
    response_model=ChainVerified,
    responses=declared(*V1_ERRORS, 500, 503),
)
def audit_verify(c: Wired, _: Auditing) -> ChainVerified:
    with unavailable("audit verification", StoreUnavailable(UNREADABLE)):
        result = c.audit.verify()
    return ChainVerified.model_validate(result, from_attributes=True)
