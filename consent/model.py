"""Domain types shared by the gate, the audit log and the service: plain typed objects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Purpose = Literal["marketing", "profiling", "service"]
ContactChannel = Literal["mobile_app", "web", "email", "sms", "phone", "rm", "branch"]
CONTACT_CHANNELS: tuple[ContactChannel, ...] = (
    "mobile_app",
    "web",
    "email",
    "sms",
    "phone",
    "rm",
    "branch",
)
#: Profiling is not tied to a contact channel; it is recorded under this channel.
ANY_CHANNEL = "any"
Need = Literal[
    "mortgage",
    "investment",
    "protection",
    "credit_card",
    "personal_loan",
    "term_deposit",
    "pension",
]
ActionKind = Literal["sales", "service", "regulatory"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsentGiven(_Frozen):
    """One entry of a customer's consent history (granted or withdrawn), never overwritten."""

    customer_id: Annotated[str, Field(min_length=1, max_length=64)]
    purpose: Purpose
    channel: ContactChannel | Literal["any"]
    granted: bool
    recorded_at: AwareDatetime
    source: Annotated[str, Field(min_length=1, max_length=64)]
    notice_version: Annotated[str, Field(min_length=1, max_length=32)]
    id: int | None = None


class Action(_Frozen):
    """An entry of the action catalog."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    need: Need | None
    kind: ActionKind
    purpose: Purpose
    value: Annotated[float, Field(gt=0)]
    risk_level: Annotated[int, Field(ge=1, le=5)]
    channels: tuple[ContactChannel, ...]
    cooloff_days: Annotated[int, Field(ge=0)] = 30
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.0
    title: str


class RuleOutcome(_Frozen):
    rule_id: str
    passed: bool
    reason_code: str | None = None
    detail: str = ""


class Candidate(_Frozen):
    action_id: str
    need: Need | None
    kind: ActionKind
    score: float | None
    value: float
    priority: float
    rules: tuple[RuleOutcome, ...]
    delivered: bool

    @property
    def suppressed_by(self) -> list[str]:
        return [r.reason_code or r.rule_id for r in self.rules if not r.passed]


class FeatureValue(_Frozen):
    name: str
    value: float | None
    as_of: datetime | None
    age_seconds: float | None


class ModelUsed(_Frozen):
    need: Need
    name: str
    version: str
    run_id: str


class DecisionRecord(_Frozen):
    """What the audit log keeps for one decision (hashing adds ``prev_hash``/``record_hash``)."""

    decision_id: str
    decided_at: AwareDatetime
    trigger: dict[str, Any]
    customer_ref: str
    channel: str
    candidates: tuple[Candidate, ...]
    delivered: tuple[str, ...]
    consents_relied_on: tuple[ConsentGiven, ...]
    features: tuple[FeatureValue, ...]
    models: tuple[ModelUsed, ...]
    policy_version: str
    code_version: str
    fallback: str | None
    reason_codes: tuple[str, ...]
    delivery_status: Literal["delivered", "nothing_to_deliver", "withheld"]
    corrects: str | None = None


KycStatus = Literal["complete", "pending", "expired", "unknown"]
ContactKind = Literal["impression", "accept", "decline", "dismiss", "contact"]


class CustomerFacts(_Frozen):
    """What the gate knows about a customer besides consent, from the operational store. It
    carries no identifier, so a decision record can keep it under a pseudonym. A fact that is
    not known takes its safe value: KYC unknown, no assessed risk tolerance."""

    age: int | None = None
    income: float | None = None
    timezone: str | None = None  # IANA name; quiet hours use it
    do_not_contact: bool = False
    vulnerable: bool = False
    kyc_status: KycStatus = "unknown"
    aml_flag: bool = False
    in_arrears: bool = False
    debt_to_income: float | None = None
    risk_level: Annotated[int, Field(ge=1, le=5)] | None = None  # assessed risk tolerance
    risk_assessed_at: AwareDatetime | None = None
    holds: tuple[Need, ...] = ()
    open_complaint: bool = False


class ContactRecord(_Frozen):
    """One entry of contact history: something shown to, or answered by, the customer or a
    member of their household."""

    occurred_at: AwareDatetime
    channel: ContactChannel
    kind: ContactKind
    action_id: str | None = None
    need: Need | None = None
    #: True when the contact was with another member of the customer's household.
    household: bool = False
