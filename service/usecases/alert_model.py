"""RM alerts as values: the alert, its statuses and reasons, a withdrawal, what a disposition
tells contact history and training, and who may see what of an alert.

The same ``Alert`` is stored (``service.adapters.alert_store``), published to
``nextbest.alerts.v1`` (``service.adapters.alert_publisher``) and returned by the API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from consent.rules.model import ContactKind

if TYPE_CHECKING:
    from service.entrypoints.auth import Role

RM_CHANNEL = "rm"
Status = Literal["queued", "open", "closed", "expired", "withdrawn"]
STATUSES: tuple[Status, ...] = ("queued", "open", "closed", "expired", "withdrawn")
#: The statuses in which an alert is still to reach the RM or be worked: the gate is asked
#: again for these, and only these can be withdrawn.
ACTIONABLE: tuple[Status, ...] = ("queued", "open")
Outcome = Literal[
    "contacted", "converted", "not_interested", "not_suitable", "wrong_timing", "unreachable"
]
#: What a disposition tells contact history (None: no contact took place).
CONTACT_KIND: dict[str, ContactKind | None] = {
    "contacted": "contact",
    "converted": "accept",
    "not_interested": "decline",
    "not_suitable": "dismiss",
    "wrong_timing": "dismiss",
    "unreachable": None,
}
#: Training labels from dispositions: the customer took the product, or said no.
LABEL: dict[str, int] = {"converted": 1, "not_interested": 0}


class AlertReason(BaseModel):
    model_config = ConfigDict(frozen=True)
    feature: str
    value: float | None
    text: str


Notice = Literal["consent_withdrawn", "not_allowed"]
Moment = Literal["open", "list", "dispose"]
#: What a withdrawal says to those who may not read the rules' reasons.
NOTICE_TEXT: dict[Notice, str] = {
    "consent_withdrawn": "consent withdrawn",
    "not_allowed": "no longer allowed by the bank's rules",
}


class Withdrawal(BaseModel):
    """Why and when an alert stopped passing the gate, and the audit record that says so."""

    model_config = ConfigDict(frozen=True)

    at: AwareDatetime
    #: What the RM may know: consent was withdrawn, or another rule no longer allows it.
    notice: Notice
    text: str
    #: The failing rules' reason codes. Compliance only: they can tell an AML flag or a
    #: vulnerability, which the front line must not learn (as with a decision's suppressions).
    reason_codes: tuple[str, ...] = ()
    #: The audit record of the withdrawal; it corrects the alert's decision.
    decision_id: str
    #: When it was found: opening a queued alert, listing alerts, or a disposition.
    moment: Moment


class Alert(BaseModel):
    """An RM alert: who, which need, why (reasons and talking points), and what became of it."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    decision_id: str
    customer_id: str
    household_id: str | None
    rm_id: str
    #: What one open alert per customer is kept to: the need, or a service action's id.
    topic: str
    need: str | None
    action_id: str
    title: str
    kind: str
    score: float | None
    priority: float
    status: Status
    created_at: AwareDatetime
    opened_at: AwareDatetime | None
    expires_at: AwareDatetime
    triggers: tuple[str, ...] = ()
    reasons: tuple[AlertReason, ...] = ()
    talking_points: tuple[str, ...] = ()
    #: The event that raised it, with its Kafka coordinates.
    origin: dict[str, Any] = Field(default_factory=dict)
    disposition: str | None = None
    disposition_note: str | None = None
    disposed_at: AwareDatetime | None = None
    disposed_by: str | None = None
    withdrawal: Withdrawal | None = None

    def redacted(self) -> Alert:
        """The alert as anyone but compliance sees it: a withdrawn alert keeps who, what and
        the notice, not the rules' reason codes, nor the reasons and talking points that were
        to be acted on (it must not be worked any more)."""
        if self.withdrawal is None:
            return self
        return self.model_copy(
            update=dict(
                score=None,
                triggers=(),
                reasons=(),
                talking_points=(),
                withdrawal=self.withdrawal.model_copy(update=dict(reason_codes=())),
            )
        )


def shown_to(role: Role, alerts: Iterable[Alert]) -> list[Alert]:
    """``alerts`` as ``role`` may see them. Compliance sees all of each. Others see a withdrawn
    alert's notice, not its reasons (``Alert.redacted``); an RM sees only the withdrawn alerts
    that had reached them (one withdrawn while queued never did)."""
    if role == "compliance":
        return list(alerts)
    return [
        alert.redacted()
        for alert in alerts
        if not (role == "rm" and alert.status == "withdrawn" and alert.opened_at is None)
    ]


@dataclass(frozen=True)
class Look:
    """What decides whether a customer is rescored for alerts at all: an RM, and consent to
    be looked at (profiling, or service on the RM channel)."""

    may_profile: bool
    may_serve: bool
    has_rm: bool

    @property
    def skip(self) -> str | None:
        if not self.has_rm:
            return "no_rm"
        if not (self.may_profile or self.may_serve):
            return "no_consent_to_look"
        return None
