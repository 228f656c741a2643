"""Domain types shared by the gate, the audit log and the service: plain typed objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from consent.rules.vocabulary import ConsentChannel, ContactChannel, Need, Purpose

ActionKind = Literal["sales", "service", "regulatory"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


#: An aware moment, kept in UTC whatever offset it came with (every stored time is UTC).
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]


class ConsentGiven(_Frozen):
    """One entry of a customer's consent history (granted or withdrawn), never overwritten.

    ``recorded_at`` is when the bank recorded it (the registry's clock): the history is ordered
    by it, so the entry recorded last is the customer's current choice and a withdrawal always
    wins over a grant recorded before it. ``given_at`` is when the customer gave it, as the
    device, the upstream system or the form says: kept as evidence, never used to order (a
    clock that runs ahead would otherwise pin a choice). Without one it is ``recorded_at``."""

    customer_id: Annotated[str, Field(min_length=1, max_length=64)]
    purpose: Purpose
    channel: ConsentChannel
    granted: bool
    recorded_at: UtcTime
    source: Annotated[str, Field(min_length=1, max_length=64)]
    notice_version: Annotated[str, Field(min_length=1, max_length=32)]
    id: int | None = None
    given_at: UtcTime | None = None
    #: Who recorded it: ``<role>:<API key name>`` for the API, ``stream`` or ``load``.
    recorded_by: Annotated[str, Field(max_length=80)] | None = None
    #: The stream event it came from (one entry per event, however often it is delivered). Not
    #: in decision records: an upstream id may spell anything, a customer id included, and the
    #: audit log must not keep one outside its pseudonym.
    event_id: str | None = Field(default=None, max_length=128, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _given_defaults_to_recorded(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("given_at") is None:
            return {**data, "given_at": data.get("recorded_at")}
        return data


#: The longest cool-off an action may declare: the gate reads this much contact history, so a
#: longer one would outlive the declines it is meant to respect.
MAX_COOLOFF_DAYS = 365

#: Which consent purposes an action of each kind may rely on. A sales action is marketing
#: whatever the catalog says, so it can never slip through on service consent.
PURPOSES_BY_KIND: dict[ActionKind, tuple[Purpose, ...]] = {
    "sales": ("marketing",),
    "service": ("service",),
    "regulatory": ("service", "marketing"),
}


class Condition(_Frozen):
    """When a triggered action is proposed at all: a feature compared with a value."""

    feature: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    op: Literal[">=", "<="]
    value: float

    def holds(self, values: dict[str, Any]) -> bool:
        value = values.get(self.feature)
        if value is None:  # unknown: the trigger did not fire
            return False
        return bool(value >= self.value if self.op == ">=" else value <= self.value)


class Action(_Frozen):
    """An entry of the action catalog. Eligibility limits are inclusive; income is annual, in
    the bank's currency; a limit left out does not apply."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    need: Need | None
    kind: ActionKind
    purpose: Purpose
    value: Annotated[float, Field(gt=0)]
    risk_level: Annotated[int, Field(ge=1, le=5)]
    channels: tuple[ContactChannel, ...]
    cooloff_days: Annotated[int, Field(ge=0, le=MAX_COOLOFF_DAYS)] = 30
    #: How long after a decision a conversion for the action's need is attributed to it
    #: (``nextbest report lift``): a mortgage takes longer to apply for than a card.
    attribution_days: Annotated[int, Field(ge=1, le=365)] = 30
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.0
    min_age: Annotated[int, Field(ge=0, le=130)] | None = None
    max_age: Annotated[int, Field(ge=0, le=130)] | None = None
    min_income: Annotated[float, Field(ge=0)] | None = None
    #: Proposed only when every condition holds on the customer's features (service actions
    #: answer a situation); without conditions an action is always a candidate.
    when: tuple[Condition, ...] = ()
    #: Or situations, one of which must hold too: each a set of conditions that all hold (a
    #: salary that dropped, or one that did not come). None listed: no further condition.
    when_any: tuple[Annotated[tuple[Condition, ...], Field(min_length=1)], ...] = ()
    #: A notice is switched on in the catalog when it must go out, and off otherwise.
    enabled: bool = True
    #: The business lever: a multiplier the bank sets per action (campaigns, capacity).
    lever: Annotated[float, Field(gt=0, le=10)] = 1.0
    #: Context weights: how much more this action matters while the customer is on a page
    #: (page name -> weight); pages not listed weigh 1.
    context: dict[str, Annotated[float, Field(gt=0, le=10)]] = Field(default_factory=dict)
    title: str

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether the action's situation holds on ``values`` (``when`` and ``when_any``)."""
        if not all(c.holds(values) for c in self.when):
            return False
        return not self.when_any or any(all(c.holds(values) for c in s) for s in self.when_any)

    @property
    def conditioned_on(self) -> frozenset[str]:
        """The features the action's situation is judged on."""
        conditions = [*self.when, *(c for s in self.when_any for c in s)]
        return frozenset(c.feature for c in conditions)

    @model_validator(mode="after")
    def _coherent(self) -> Action:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        allowed = PURPOSES_BY_KIND[self.kind]
        if self.purpose not in allowed:
            raise ValueError(f"a {self.kind} action's purpose must be one of {list(allowed)}")
        return self


class RuleOutcome(_Frozen):
    """One rule's verdict on one candidate, with the version of the rule that gave it."""

    rule_id: str
    #: Kept once per record (``DecisionRecord.rule_versions``), not in every outcome: repeated
    #: for every candidate it was a large share of the record and of the audit writer's work.
    rule_version: Annotated[str, Field(exclude=True)] = ""
    passed: bool
    reason_code: str | None = None
    detail: str = ""

    @model_validator(mode="after")
    def _reason_only_when_suppressed(self) -> RuleOutcome:
        # Every suppression must say why, and a pass must not look like one.
        if self.passed == (self.reason_code is not None):
            raise ValueError("reason_code is set exactly when the rule did not pass")
        return self


class Candidate(_Frozen):
    action_id: str
    need: Need | None
    kind: ActionKind
    score: float | None
    value: float
    priority: float
    rules: tuple[RuleOutcome, ...]
    delivered: bool
    #: The terms of the priority: propensity (the calibrated score; 1 for a triggered or
    #: unscored action) × value × context weight × business lever.
    propensity: float = 1.0
    context_weight: float = 1.0
    lever: float = 1.0

    # In the record a rule that passed is named by its id alone: its detail follows from the
    # gate inputs the record keeps, and spelled out for every candidate the passes were most of
    # the record's bytes and of the audit writer's cost. Suppressions keep code and detail.
    @field_serializer("rules")
    def _compact(self, rules: tuple[RuleOutcome, ...]) -> list[str | dict[str, Any]]:
        return [
            r.rule_id
            if r.passed
            else {"rule_id": r.rule_id, "reason_code": r.reason_code, "detail": r.detail}
            for r in rules
        ]

    @field_validator("rules", mode="before")
    @classmethod
    def _expand(cls, rules: Any) -> Any:
        if not isinstance(rules, list | tuple):
            return rules
        return tuple(
            {"rule_id": r, "passed": True}
            if isinstance(r, str)
            else {"passed": False, **r}
            if isinstance(r, dict) and "passed" not in r
            else r
            for r in rules
        )

    @property
    def suppressed_by(self) -> list[str]:
        return [r.reason_code or r.rule_id for r in self.rules if not r.passed]


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
