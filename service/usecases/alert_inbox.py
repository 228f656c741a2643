"""RM alerts reaching the RM: queued ones opened as capacity frees up, alerts listed, and
dispositions recorded, each time after the gate is asked again (``service.usecases.regate``).

Every second the sweep expires what was not worked in time and opens queued alerts where an
RM has capacity left today, highest priority first. An alert that no longer passes the gate
when it is opened, listed or disposed is ``withdrawn``, with its reason, and the withdrawal is
logged. A disposition closes an open alert, goes to contact history and becomes a training
label. New and changed alerts are published to ``nextbest.alerts.v1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from consent.stores.contacts import ContactHistory
from service.adapters.alert_publisher import AlertFeed
from service.adapters.alert_store import AlertStore
from service.errors import Conflict, NotFound
from service.usecases.alert_model import ACTIONABLE, Alert, Moment, Outcome, Status
from service.usecases.alert_policy import AlertPolicy
from service.usecases.regate import AlertGate, Regated


@dataclass(frozen=True)
class Listed:
    """Alerts as listed, and how many were left out because the gate could not be asked."""

    alerts: list[Alert]
    unchecked: int


class AlertInbox:
    def __init__(
        self,
        store: AlertStore,
        gate: AlertGate,
        contacts: ContactHistory,
        policy: AlertPolicy,
        feed: AlertFeed | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        #: The gate again, at the moment an alert reaches the RM (opened, listed, disposed).
        self.gate = gate
        self.contacts = contacts
        self.policy = policy
        self.feed = feed or AlertFeed()
        self.clock = clock
        #: Alerts withdrawn because they no longer passed the gate when they were to reach
        #: the RM.
        self.withdrawn = 0

    def sweep(self) -> list[Alert]:
        """Expire what is overdue; open queued alerts where capacity is left, each only if it
        still passes the gate (one that cannot be checked now stays queued)."""
        now = self.clock()
        withdrawn: list[Alert] = []

        def admit(due: list[Alert]) -> list[str]:
            regated = self._regate(due, now, "open")
            withdrawn.extend(regated.withdrawn)
            return [a.alert_id for a in regated.allowed]

        changed = self.store.sweep(self.policy.rm_daily_capacity, now, admit)
        if changed or withdrawn or self.feed.behind:
            self.feed.publish([*withdrawn, *changed])
        return [*withdrawn, *changed]

    def alerts(self, rm_id: str | None, status: Status | None, limit: int) -> Listed:
        """Alerts as listed (``AlertStore.find``) after a sweep, the queued and open ones asked
        the gate again: one that fails is withdrawn (and listed so unless only queued or open
        ones were asked for); one that cannot be checked now is left out and counted."""
        self.sweep()
        found = self.store.find(rm_id, status, limit)
        regated = self._regate([a for a in found if a.status in ACTIONABLE], self.clock(), "list")
        now_as = {a.alert_id: a for a in regated.withdrawn}
        listed = []
        for alert in found:
            if alert.alert_id in regated.unchecked:
                continue
            alert = now_as.get(alert.alert_id, alert)
            if status is None or alert.status == status:
                listed.append(alert)
        return Listed(listed, len(regated.unchecked))

    def dispose(self, alert_id: str, outcome: Outcome, by: str, note: str | None = None) -> Alert:
        """Record what the RM did with an open alert, if it still passes the gate: one that
        no longer does is withdrawn and refused (409), as is one withdrawn before; if the
        gate cannot be asked now, nothing is recorded (503)."""
        alert = self.store.get(alert_id)
        if alert is None:
            raise NotFound("no alert with that id")
        if alert.status in ACTIONABLE:
            regated = self._regate([alert], self.clock(), "dispose")
            if alert_id in regated.unchecked:
                raise regated.unchecked[alert_id]
            alert = next(iter(regated.withdrawn), alert)
        if alert.withdrawal is not None:
            raise Conflict(
                f"the alert was withdrawn ({alert.withdrawal.text}): it takes no disposition",
                details={"status": alert.status, "withdrawal": alert.withdrawal.notice},
            )
        alert = self.store.dispose(alert_id, outcome, by, self.clock(), note, self.contacts)
        self.feed.publish([alert])
        return alert

    def _regate(self, alerts: Sequence[Alert], now: datetime, moment: Moment) -> Regated:
        """``AlertGate.check``, with what it withdrew stored (and published) as withdrawn."""
        regated = self.gate.check(alerts, now, moment)
        if regated.withdrawn:
            stored = self.store.withdraw(regated.withdrawn)
            self.withdrawn += sum(a.status == "withdrawn" for a in stored)
            regated = regated.stored_as(stored)
            if moment != "open":  # the sweep publishes its own
                self.feed.publish(regated.withdrawn)
        return regated
