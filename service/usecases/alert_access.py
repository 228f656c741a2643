"""An RM's inbox as the caller may see and work it.

An RM lists and disposes of their own alerts only; compliance and admin list anyone's, and admin
may dispose of anyone's. What each role sees of a listed alert is ``shown_to``'s rule.
"""

from __future__ import annotations

from service.entrypoints.auth import Principal
from service.errors import Forbidden, NotFound
from service.usecases.alert_inbox import AlertInbox, Listed
from service.usecases.alert_model import Alert, Outcome, Status, shown_to


def list_alerts(
    inbox: AlertInbox, who: Principal, rm_id: str | None, status: Status | None, limit: int
) -> Listed:
    """The alerts of ``rm_id`` (an RM's own when they name nobody; another RM's are refused),
    highest priority first, as ``who`` may see them. Listing expires what is overdue, opens
    what waited for capacity and asks the gate again (``AlertInbox.alerts``)."""
    if who.role == "rm":
        if rm_id is not None and rm_id != who.rm_id:
            raise Forbidden("an RM sees only their own alerts")
        rm_id = who.rm_id
    listed = inbox.alerts(rm_id, status, limit)
    return Listed(shown_to(who.role, listed.alerts), listed.unchecked)


def dispose_alert(
    inbox: AlertInbox, who: Principal, alert_id: str, outcome: Outcome, note: str | None
) -> Alert:
    """Record what ``who`` did with an open alert (``AlertInbox.dispose``: the gate is asked
    again first). An RM disposes only of their own."""
    alert = inbox.store.get(alert_id)
    if alert is None:
        raise NotFound("no alert with that id")
    if who.role == "rm" and alert.rm_id != who.rm_id:
        raise Forbidden("this alert belongs to another RM")
    return inbox.dispose(alert_id, outcome, who.name, note)
