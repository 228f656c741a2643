"""The audit log, for compliance: one decision's record, its proof against a signed checkpoint,
the proof that one checkpoint extends another, and the log's verification."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from consent.stores.audit.proofs import ProofRefused
from feature_repo.events import SAFE_ID_PATTERN
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import V1_ERRORS, declared
from service.entrypoints.api.schemas import (
    AuditEntry,
    ChainVerified,
    ConsistencyProof,
    InclusionProof,
)
from service.entrypoints.api.security import Auditing
from service.entrypoints.api.state import Wired
from service.errors import Conflict, NotFound, StoreUnavailable
from service.usecases.audit_verification import verify_log

DecisionId = Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]

UNREADABLE = "the audit log cannot be read right now"
#: Largest tree size a query may name (far beyond any log; bounds the number parsed).
MAX_SIZE = 2**53

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
    "/v1/audit/decisions/{decision_id}/proof",
    response_model=InclusionProof,
    responses=declared(*V1_ERRORS, 404, 409, 500, 503),
)
def audit_proof(
    decision_id: DecisionId,
    c: Wired,
    _: Auditing,
    checkpoint: Annotated[
        int | None,
        Query(ge=1, le=MAX_SIZE, description="The checkpoint's size; default: the newest."),
    ] = None,
) -> dict[str, Any]:
    """The record, its leaf hash and its inclusion proof to a published signed checkpoint
    (if none holds it yet, one is signed now). Check it with ``verify_audit.py inclusion``."""
    with unavailable("audit proof", StoreUnavailable(UNREADABLE)), refused():
        return c.audit_proofs.inclusion(decision_id, checkpoint)


@router.get(
    "/v1/audit/consistency",
    response_model=ConsistencyProof,
    responses=declared(*V1_ERRORS, 404, 409, 500, 503),
)
def audit_consistency(
    c: Wired,
    _: Auditing,
    old: Annotated[int, Query(alias="from", ge=1, le=MAX_SIZE)],
    new: Annotated[int, Query(alias="to", ge=1, le=MAX_SIZE)],
) -> dict[str, Any]:
    """That the checkpoint of ``to`` records extends the one of ``from``: nothing they share
    was changed or removed. Check it with ``verify_audit.py consistency``."""
    if old > new:  # a valid query for a proof that cannot exist (the schema cannot say so)
        raise NotFound("no consistency proof leads from a larger checkpoint to a smaller")
    with unavailable("audit consistency", StoreUnavailable(UNREADABLE)), refused():
        return c.audit_proofs.consistency(old, new)


@contextmanager
def refused() -> Iterator[None]:
    """A proof that cannot be given, as the API's errors."""
    try:
        yield
    except ProofRefused as error:
        if error.code == "log_differs":
            raise Conflict(str(error)) from error
        raise NotFound(str(error)) from error


@router.get(
    "/v1/audit/verify",
    response_model=ChainVerified,
    responses=declared(*V1_ERRORS, 500, 503),
)
def audit_verify(c: Wired, _: Auditing) -> dict[str, Any]:
    """The whole log held to every published signed checkpoint the sinks hold."""
    with unavailable("audit verification", StoreUnavailable(UNREADABLE)):
        report = verify_log(
            c.audit, c.checkpoint_sinks, c.audit_verifier_keys(), c.settings.audit_origin
        )
    return report.as_dict()
