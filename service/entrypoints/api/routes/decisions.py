"""``POST /v1/decisions``: the next best actions for a customer on a channel.

The hot path: its route class (``direct_route``) reads the request itself, and the response is
serialised here, once.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from consent.rules.catalog import Catalog
from service.entrypoints.api.direct import direct_route
from service.entrypoints.api.openapi import BODY_ERRORS, V1_ERRORS, declared
from service.entrypoints.api.schemas import (
    ActionOut,
    DecisionRequest,
    DecisionResponse,
    NoticeOut,
    ReasonOut,
    SuppressedOut,
)
from service.entrypoints.api.security import DECIDING, Deciding
from service.entrypoints.api.state import Sharing
from service.entrypoints.auth import Role
from service.usecases.decisions import CUSTOMER_UNKNOWN, DecideForCustomer, DecisionMade

router = APIRouter()


async def decide(body: DecisionRequest, process: Sharing, who: Deciding) -> Response:
    command = DecideForCustomer(
        customer_id=body.customer_id,
        channel=body.channel,
        limit=body.limit,
        context=body.context.model_dump(exclude_none=True),
    )
    c = process.container
    decisions = c.decisions  # wired on first use (stores opened): not the deadline's
    made = await process.decisions.decide(decisions, command)
    process.metrics.observe_decision(made.record)
    # Serialised here: the response was built and validated by its model just now, and
    # FastAPI would validate it all over again (the schema stays the declared model's).
    response = decision_response(made, c.catalog, who.role)
    return Response(response.model_dump_json(), media_type="application/json")


router.add_api_route(
    "/v1/decisions",
    decide,
    methods=["POST"],
    response_model=DecisionResponse,
    responses=declared(*V1_ERRORS, *BODY_ERRORS, 500, 503),
    route_class_override=direct_route(DecisionRequest, DECIDING),
)


def _actions(made: DecisionMade, catalog: Catalog) -> list[ActionOut]:
    record = made.record
    actions = []
    for action_id in record.delivered:
        candidate = next(c for c in record.candidates if c.action_id == action_id)
        actions.append(
            ActionOut(
                action_id=action_id,
                title=catalog.actions[action_id].title,
                need=candidate.need,
                kind=candidate.kind,
                score=candidate.score,
                value=candidate.value,
                priority=candidate.priority,
                propensity=candidate.propensity,
                context_weight=candidate.context_weight,
                lever=candidate.lever,
                reasons=[
                    ReasonOut(
                        feature=r.feature,
                        value=r.value,
                        contribution=round(r.contribution, 4),
                        text=r.text,
                    )
                    for r in made.reasons.get(candidate.need or "", ())
                ],
            )
        )
    return actions


def _suppressed(made: DecisionMade, role: Role) -> list[SuppressedOut] | None:
    """Why the other actions were not delivered, for compliance only: suppression reasons can
    reveal what a front line must not see (an AML flag, vulnerability)."""
    if role != "compliance":
        return None
    return [
        SuppressedOut(
            action_id=c.action_id,
            reason_codes=c.suppressed_by,
            details=[r.detail for r in c.rules if not r.passed],
        )
        for c in made.record.candidates
        if not c.delivered and c.suppressed_by
    ]


def _notices(made: DecisionMade) -> list[NoticeOut]:
    record = made.record
    notices = []
    stale = [c.action_id for c in record.candidates if "FEATURES_STALE" in c.suppressed_by]
    if stale:
        notices.append(
            NoticeOut(
                code="FEATURES_STALE",
                message=f"withheld because the customer's data is out of date: {', '.join(stale)}",
            )
        )
    if CUSTOMER_UNKNOWN in record.reason_codes:
        notices.append(
            NoticeOut(
                code=CUSTOMER_UNKNOWN,
                message="the customer is not in the bank's directory: nothing is offered",
            )
        )
    if record.fallback is not None:
        notices.append(
            NoticeOut(
                code="DEGRADED",
                message="decided without personal features (the online store is unavailable)",
            )
        )
    return notices


def decision_response(made: DecisionMade, catalog: Catalog, role: Role) -> DecisionResponse:
    """The decision as ``role`` may read it."""
    record = made.record
    return DecisionResponse(
        notices=_notices(made),
        decision_id=record.decision_id,
        customer_id=made.customer_id,
        channel=record.channel,
        decided_at=record.decided_at,
        actions=_actions(made, catalog),
        suppressed=_suppressed(made, role),
        degraded=record.fallback is not None,
        fallback=record.fallback,
        policy_version=record.policy_version,
        models={m.need: f"{m.name}/{m.version}" for m in record.models},
        audit_seq=made.audit.seq,
        audit_hash=made.audit.record_hash,
    )
