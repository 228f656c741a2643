"""An RM's alerts: the inbox, and what the RM did with one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import Field

from feature_repo.events import SAFE_ID_PATTERN
from service.entrypoints.api.errors import unavailable
from service.entrypoints.api.openapi import BODY_ERRORS, V1_ERRORS, declared
from service.entrypoints.api.schemas import AlertList, DispositionIn
from service.entrypoints.api.security import DisposingAlerts, ReadingAlerts
from service.entrypoints.api.state import Wired
from service.errors import StoreUnavailable
from service.usecases import alert_access
from service.usecases.alert_model import Alert
from service.usecases.alert_model import Status as AlertStatus

RmId = Annotated[str, Field(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]
AlertId = Annotated[str, Path(min_length=1, max_length=64, pattern=SAFE_ID_PATTERN)]

router = APIRouter()


@router.get(
    "/v1/alerts",
    response_model=AlertList,
    responses=declared(*V1_ERRORS, 500, 503),
)
def list_alerts(
    c: Wired,
    who: ReadingAlerts,
    rm_id: Annotated[RmId | None, Query()] = None,
    status: Annotated[AlertStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertList:
    """An RM's alerts, highest priority first. An RM sees their own (``rm_id`` defaults to
    theirs, another's is refused); compliance and admin see anyone's. Queued and open
    alerts pass the gate again first: one that no longer does is withdrawn. Only
    compliance reads a withdrawal's reason codes; an RM sees the withdrawn alerts they
    had been shown."""
    with unavailable("alerts read", StoreUnavailable("the alerts cannot be read right now")):
        inbox = alert_access.list_alerts(c.alert_inbox, who, rm_id, status, limit)
    return AlertList(alerts=inbox.alerts, unchecked=inbox.unchecked)


@router.post(
    "/v1/alerts/{alert_id}/disposition",
    response_model=Alert,
    responses=declared(*V1_ERRORS, *BODY_ERRORS, 404, 409, 500, 503),
)
def dispose_alert(alert_id: AlertId, body: DispositionIn, c: Wired, who: DisposingAlerts) -> Alert:
    """What the RM did with an open alert. It closes the alert, goes to contact history
    (declines start the action's cool-off) and becomes a training label. The alert passes
    the gate again first: a withdrawn one is refused with 409 and the reason."""
    with unavailable("alert disposition", StoreUnavailable()):
        return alert_access.dispose_alert(c.alert_inbox, who, alert_id, body.outcome, body.note)
