"""The action catalog and the compliance policy, both loaded from versioned YAML, and the gate.

A policy lists rules by id; each id names an entry of the registry below, with its parameter
model and its check. The gate evaluates every rule for every candidate and returns each outcome,
passed or not, so every suppression has a reason and every pass says why. Unknown keys, unknown
rule ids and bad parameters fail at load. Facts the gate does not know take the safe side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from consent.rules.model import (
    MAX_COOLOFF_DAYS,
    Action,
    ActionKind,
    ConsentGiven,
    ContactKind,
    ContactRecord,
    CustomerFacts,
    RuleOutcome,
)
from consent.rules.vocabulary import ANY_CHANNEL, ConsentChannel, ContactChannel, Need


class PolicyError(ValueError):
    code = "invalid_policy"


def content_hash(document: Any) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def explain_invalid(error: ValidationError) -> str:
    """One line per problem, naming where it is: what a policy author needs to fix it."""
    problems = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"]) or "entry"
        shown = "" if isinstance(e["input"], dict | list) else f" (got {e['input']!r})"
        problems.append(f"{where}: {e['msg']}{shown}")
    return "; ".join(problems)


def load_rules_yaml(path: Path | None, packaged: str) -> Any:
    """The YAML document at ``path``, or else the one packaged in ``consent/`` as ``packaged``
    (``policy.yaml``, ``actions.yaml``, ``alerts.yaml``)."""
    text = path.read_text() if path else resources.files("consent").joinpath(packaged).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{packaged} is not valid YAML: {error}") from None


class _Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    actions: Annotated[list[Action], Field(min_length=1)]


class Catalog:
    def __init__(self, actions: list[Action], version: str) -> None:
        self.actions = {a.id: a for a in actions}
        self.version = version

    def delivery_threshold(self, need: str) -> float | None:
        """The lowest score at which any action for ``need`` may be delivered (None: no action)."""
        scores = [a.min_score for a in self.actions.values() if a.need == need]
        return min(scores) if scores else None

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        document = load_rules_yaml(path, "actions.yaml")
        try:
            parsed = _Catalog.model_validate(document)
        except ValidationError as error:
            raise PolicyError(f"invalid action catalog: {explain_invalid(error)}") from None
        return cls(parsed.actions, content_hash(document))


#: The current consent per (purpose, channel). The key is loosely typed because a Mapping's key
#: type is invariant: a dict keyed by the Purpose and channel literals must fit too.
ConsentState = Mapping[tuple[Any, Any], ConsentGiven]


@dataclass(frozen=True)
class Subject:
    """What the gate knows about one candidate action for one customer at one moment."""

    action: Action
    channel: str
    score: float | None
    consents: ConsentState
    now: datetime
    #: None: the customer is unknown to the store, and every fact rule fails safe.
    facts: CustomerFacts | None = None
    #: The customer's and their household's recent contact history.
    contacts: tuple[ContactRecord, ...] = ()
    #: Needs with an application in flight.
    in_flight: frozenset[str] = frozenset()
    #: Features older than their allowed age (served as missing), and the features this
    #: action depends on: its model's most important ones, or its trigger's.
    stale: frozenset[str] = frozenset()
    depends_on: frozenset[str] = frozenset()
    #: Needs with a model served: one registered under the serving alias that met the quality
    #: floor. None: not recorded (a replay of a decision made before it was kept).
    models_served: frozenset[str] | None = None
    #: Shared by the subjects of one decision: what rules work out from the customer alone
    #: (contact counts) is worked out once, not once per candidate.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Contact history and risk assessments carry aware times; a naive clock cannot be
        # compared with them, and guessing its zone could open a cool-off early.
        if self.now.utcoffset() is None:
            raise ValueError("Subject.now must be an aware datetime")


# --- rule parameters --------------------------------------------------------------------------

#: A span of days a rule looks back over; bounded by the history the gate is given.
Days = Annotated[StrictInt, Field(gt=0, le=MAX_COOLOFF_DAYS)]
Kinds = Annotated[tuple[ActionKind, ...], Field(min_length=1)]
Needs = Annotated[tuple[Need, ...], Field(min_length=1)]
ClockTime = Annotated[StrictStr, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def lookback_days(self) -> int:
        """How many days of contact history the rule reads."""
        return 0


class NoParams(_Params):
    pass


class AffordabilityParams(_Params):
    needs: Needs = ("mortgage", "personal_loan", "credit_card")
    max_debt_to_income: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] = 0.45


class SuitabilityParams(_Params):
    needs: Needs = ("investment", "pension")
    assessment_valid_days: Annotated[StrictInt, Field(gt=0)] = 365


class HeldParams(_Params):
    #: Needs where holding the product does not block another offer (a top-up, a new deposit).
    #: Empty by default: holding a product blocks offering it again unless the policy says so.
    allow_held: tuple[Need, ...] = ()


class Cap(_Params):
    channel: ConsentChannel
    window_days: Days
    max: Annotated[StrictInt, Field(ge=1)]


class CapsParams(_Params):
    caps: Annotated[tuple[Cap, ...], Field(min_length=1)]
    count_kinds: Annotated[tuple[ContactKind, ...], Field(min_length=1)] = ("impression",)
    household: StrictBool = True
    # Regulatory notices are never capped: a required notice must not wait for a quieter week.
    applies_to: Annotated[tuple[Literal["sales", "service"], ...], Field(min_length=1)] = (
        "sales",
        "service",
    )

    @property
    def lookback_days(self) -> int:
        return max(cap.window_days for cap in self.caps)


class CooloffParams(_Params):
    kinds: Annotated[tuple[ContactKind, ...], Field(min_length=1)] = ("decline",)
    household: StrictBool = False

    @property
    def lookback_days(self) -> int:
        # The cool-off is the action's, from the catalog; any action may ask for the maximum.
        return MAX_COOLOFF_DAYS


class QuietHoursParams(_Params):
    start: ClockTime = "21:00"
    end: ClockTime = "08:00"
    channels: Annotated[tuple[ContactChannel, ...], Field(min_length=1)] = (
        "phone",
        "sms",
        "email",
        "rm",
    )
    #: The bank's own zone, for customers whose zone is unknown: no default, the bank says.
    default_timezone: StrictStr
    applies_to: Kinds = ("sales", "service", "regulatory")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 21:00 as the base-60 number 1260.
            raise ValueError("write times as quoted strings, e.g. '21:00'")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if _zone(value) is None:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHoursParams:
        if self.start == self.end:
            raise ValueError("start and end are equal: quiet hours would be empty or all day")
        return self

    def is_quiet(self, local: time) -> bool:
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start < end:
            return start <= local < end
        return local >= start or local < end


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # A name from the customer master may be anything: "Europe" is a folder of tzdata.
        return None


# --- the registry ---------------------------------------------------------------------------

Verdict = tuple[bool, str]
P = TypeVar("P", bound=_Params)
Check = Callable[[Subject, P], Verdict]

_ALL: frozenset[ActionKind] = frozenset({"sales", "service", "regulatory"})
_SALES: frozenset[ActionKind] = frozenset({"sales"})
_NOT_REGULATORY: frozenset[ActionKind] = frozenset({"sales", "service"})


@dataclass(frozen=True)
class _Definition(Generic[P]):
    params: type[P]
    check: Check[P]
    #: Kinds the rule judges; for the others it passes, saying it does not apply.
    kinds: frozenset[ActionKind]


_REGISTRY: dict[str, _Definition[Any]] = {}


def _rule(
    rule_id: str, params: type[P], kinds: frozenset[ActionKind]
) -> Callable[[Check[P]], Check[P]]:
    def register(check: Check[P]) -> Check[P]:
        _REGISTRY[rule_id] = _Definition(params, check, kinds)
        return check

    return register


_UNKNOWN = "customer unknown to the store"


def _granted(consents: ConsentState, purpose: str, channel: str) -> bool:
    record = consents.get((purpose, channel))
    return record is not None and record.granted


@_rule("consent.purpose_channel", NoParams, _ALL)
def _purpose_channel(subject: Subject, _: NoParams) -> Verdict:
    purpose, channel = subject.action.purpose, subject.channel
    if subject.action.kind == "regulatory" and purpose != "marketing":
        return True, f"regulatory notice with {purpose} purpose: sent whatever the consent"
    if _granted(subject.consents, purpose, channel):
        return True, f"{purpose} consent granted for {channel}"
    state = subject.consents.get((purpose, channel))
    if state is None:
        return False, f"no {purpose} consent on record for {channel} (unknown consent is a no)"
    return False, f"{purpose} consent for {channel} withdrawn at {state.recorded_at.isoformat()}"


@_rule("consent.profiling", NoParams, _ALL)
def _profiling(subject: Subject, _: NoParams) -> Verdict:
    if subject.action.need is None:
        return True, "not chosen by a personal model"
    if _granted(subject.consents, "profiling", ANY_CHANNEL):
        return True, "profiling consent granted"
    return False, "no profiling consent: the customer may not be scored by a personal model"


@_rule("customer.do_not_contact", NoParams, _NOT_REGULATORY)
def _do_not_contact(subject: Subject, _: NoParams) -> Verdict:
    if subject.facts is None:
        return False, f"{_UNKNOWN}: a do-not-contact request may exist"
    if subject.facts.do_not_contact:
        return False, "the customer asked not to be contacted"
    return True, "no do-not-contact request"


@_rule("customer.vulnerable", NoParams, _SALES)
def _vulnerable(subject: Subject, _: NoParams) -> Verdict:
    if subject.facts is None:
        return False, f"{_UNKNOWN}: the customer may be vulnerable"
    if subject.facts.vulnerable:
        return False, "the customer is flagged vulnerable: no sales actions"
    return True, "not flagged vulnerable"


@_rule("customer.kyc", NoParams, _SALES)
def _kyc(subject: Subject, _: NoParams) -> Verdict:
    status = "unknown" if subject.facts is None else subject.facts.kyc_status
    if status == "complete":
        return True, "KYC complete"
    return False, f"KYC status {status}: no new products until KYC is complete"


@_rule("customer.aml", NoParams, _SALES)
def _aml(subject: Subject, _: NoParams) -> Verdict:
    if subject.facts is None:
        return False, f"{_UNKNOWN}: an AML flag may be set"
    if subject.facts.aml_flag:
        return False, "AML flag set: no new products"
    return True, "no AML flag"


@_rule("lending.affordability", AffordabilityParams, _SALES)
def _affordability(subject: Subject, params: AffordabilityParams) -> Verdict:
    need, facts, limit = subject.action.need, subject.facts, params.max_debt_to_income
    if need not in params.needs:
        return True, f"not lending (lending needs: {', '.join(params.needs)})"
    if facts is None:
        return False, f"{_UNKNOWN}: arrears and debt-to-income unknown"
    if facts.in_arrears:
        return False, "the customer is in arrears: no lending"
    if facts.debt_to_income is None:
        return False, "debt-to-income unknown: no lending"
    if facts.debt_to_income > limit:
        return False, f"debt-to-income {facts.debt_to_income:.2f} above the limit {limit:.2f}"
    return True, f"not in arrears; debt-to-income {facts.debt_to_income:.2f} within {limit:.2f}"


@_rule("investment.suitability", SuitabilityParams, _SALES)
def _suitability(subject: Subject, params: SuitabilityParams) -> Verdict:
    action, facts = subject.action, subject.facts
    if action.need not in params.needs:
        return True, f"not an investment (investment needs: {', '.join(params.needs)})"
    if facts is None:
        return False, f"{_UNKNOWN}: no risk assessment"
    if facts.risk_level is None or facts.risk_assessed_at is None:
        return False, "no risk assessment on record"
    assessed, valid_days = facts.risk_assessed_at, params.assessment_valid_days
    if subject.now - assessed > timedelta(days=valid_days):
        return False, f"risk assessment of {assessed.date()} older than {valid_days} days"
    product, tolerance = action.risk_level, facts.risk_level
    if product > tolerance:
        return False, f"product risk {product} above the assessed tolerance {tolerance}"
    return True, f"product risk {product} within tolerance {tolerance} ({assessed.date()})"


@_rule("product.age_limits", NoParams, _ALL)
def _age_limits(subject: Subject, _: NoParams) -> Verdict:
    action = subject.action
    age = None if subject.facts is None else subject.facts.age
    income = None if subject.facts is None else subject.facts.income
    problems = []
    if action.min_age is not None or action.max_age is not None:
        if age is None:
            problems.append("age unknown")
        elif action.min_age is not None and age < action.min_age:
            problems.append(f"age {age} below the minimum {action.min_age}")
        elif action.max_age is not None and age > action.max_age:
            problems.append(f"age {age} above the maximum {action.max_age}")
    if action.min_income is not None:
        if income is None:
            problems.append("income unknown")
        elif income < action.min_income:
            problems.append(f"income {income:.0f} below the minimum {action.min_income:.0f}")
    if problems:
        return False, "; ".join(problems)
    if action.min_age is None and action.max_age is None and action.min_income is None:
        return True, "the catalog sets no eligibility limits for this action"
    return True, "within the catalog's age and income limits"


@_rule("product.held_or_in_flight", HeldParams, _SALES)
def _held_or_in_flight(subject: Subject, params: HeldParams) -> Verdict:
    need = subject.action.need
    if need is None:
        return True, "not tied to a need"
    if need in subject.in_flight:
        return False, f"a {need} application is in flight"
    if subject.facts is None:
        return False, f"{_UNKNOWN}: products held unknown"
    if need in subject.facts.holds:
        if need in params.allow_held:
            return True, f"holds {need}, and holding it does not block another"
        return False, f"already holds {need}"
    return True, f"holds no {need} and has no application in flight"


def _counts(contact: ContactRecord, kinds: tuple[ContactKind, ...], household: bool) -> bool:
    return contact.kind in kinds and (household or not contact.household)


@_rule("contact.caps", CapsParams, _ALL)
def _caps(subject: Subject, params: CapsParams) -> Verdict:
    if subject.action.kind not in params.applies_to:
        return True, f"caps do not apply to {subject.action.kind} actions"
    key = ("contact.caps", id(params))
    verdict = subject.memo.get(key)
    if verdict is None:
        verdict = subject.memo[key] = _caps_verdict(subject, params)
    return verdict


def _caps_verdict(subject: Subject, params: CapsParams) -> Verdict:
    reached: list[str] = []
    checked: list[str] = []
    for cap in params.caps:
        if cap.channel not in (ANY_CHANNEL, subject.channel):
            continue
        since = subject.now - timedelta(days=cap.window_days)
        count = sum(
            1
            for c in subject.contacts
            if _counts(c, params.count_kinds, params.household)
            and cap.channel in (ANY_CHANNEL, c.channel)
            and c.occurred_at > since
        )
        where = "all channels" if cap.channel == ANY_CHANNEL else cap.channel
        text = f"{count} of {cap.max} on {where} in {cap.window_days} days"
        if count >= cap.max:
            reached.append(text)
        else:
            checked.append(text)
    scope = "household included" if params.household else "customer only"
    if reached:
        return False, f"cap reached: {'; '.join(reached)} ({scope})"
    if not checked:
        return True, f"no cap for {subject.channel}"
    return True, f"within caps: {'; '.join(checked)} ({scope})"


@_rule("contact.cooloff", CooloffParams, _NOT_REGULATORY)
def _cooloff(subject: Subject, params: CooloffParams) -> Verdict:
    action = subject.action
    if action.cooloff_days == 0:
        return True, "the action has no cool-off"
    since = subject.now - timedelta(days=action.cooloff_days)
    answers = [
        c
        for c in subject.contacts
        if _counts(c, params.kinds, params.household)
        and c.occurred_at > since
        and (c.action_id == action.id or (action.need is not None and c.need == action.need))
    ]
    if not answers:
        return True, f"no {'/'.join(params.kinds)} in the last {action.cooloff_days} days"
    last = max(answers, key=lambda c: c.occurred_at)
    until = (last.occurred_at + timedelta(days=action.cooloff_days)).date().isoformat()
    what = last.action_id or last.need
    return False, f"{last.kind} of {what} on {last.occurred_at.date()}: cool-off until {until}"


@_rule("contact.quiet_hours", QuietHoursParams, _ALL)
def _quiet_hours(subject: Subject, params: QuietHoursParams) -> Verdict:
    if subject.action.kind not in params.applies_to:
        return True, f"quiet hours do not apply to {subject.action.kind} actions"
    if subject.channel not in params.channels:
        return True, f"{subject.channel} is not an outbound channel"
    zone = _zone(subject.facts.timezone if subject.facts else None)
    note = ""
    if zone is None:
        zone = ZoneInfo(params.default_timezone)
        note = " (customer's time zone unknown: the bank's)"
    local = subject.now.astimezone(zone)
    where = f"{local:%H:%M} in {zone.key}{note}"
    if params.is_quiet(local.time()):
        return False, f"{where} is within quiet hours {params.start}-{params.end}"
    return True, f"{where} is outside quiet hours {params.start}-{params.end}"


@_rule("customer.open_complaint", NoParams, _SALES)
def _open_complaint(subject: Subject, _: NoParams) -> Verdict:
    if subject.facts is None:
        return False, f"{_UNKNOWN}: a complaint may be open"
    if subject.facts.open_complaint:
        return False, "a complaint is open: no sales actions until it is resolved"
    return True, "no open complaint"


@_rule("model.served", NoParams, _ALL)
def _model_served(subject: Subject, _: NoParams) -> Verdict:
    need = subject.action.need
    if need is None:
        return True, "not chosen by a personal model"
    if subject.models_served is None:
        return True, "which models were served was not recorded; the score rule judges"
    if need in subject.models_served:
        return True, f"a {need} model is served"
    return False, (
        f"no {need} model is served: none is registered, or the registered one is below the "
        "quality floor (a model no better than chance is not used)"
    )


@_rule("model.min_score", NoParams, _ALL)
def _min_score(subject: Subject, _: NoParams) -> Verdict:
    if subject.action.need is None:
        return True, "not a scored action"
    if subject.score is None:
        return False, f"no {subject.action.need} score (no consent, features or model to score)"
    threshold = subject.action.min_score
    passed = subject.score >= threshold
    return passed, f"score {subject.score:.3f} {'>=' if passed else '<'} threshold {threshold:.3f}"


@_rule("features.fresh", NoParams, _ALL)
def _fresh(subject: Subject, _: NoParams) -> Verdict:
    stale = sorted(subject.depends_on & subject.stale)
    if not subject.depends_on:
        return True, "depends on no personal features"
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        return False, f"depends on features older than allowed: {shown}"
    return True, "every feature it depends on is fresh"


# --- the policy -----------------------------------------------------------------------------


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    reason_code: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    description: Annotated[str, Field(min_length=1)]
    params: dict[str, Any] = {}


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    rules: Annotated[list[RuleSpec], Field(min_length=1)]


#: Distinct outcomes a rule keeps to share (see ``Rule._outcomes``).
MAX_SHARED_OUTCOMES = 1024


@dataclass(frozen=True)
class Rule:
    """A rule of a loaded policy; ``version`` is the content hash of its own YAML entry."""

    id: str
    reason_code: str
    description: str
    params: _Params
    version: str
    definition: _Definition[Any] = field(repr=False)
    #: Outcomes already built, by (passed, detail): a hundred and more per decision, and most
    #: repeat (outcomes are immutable, so they are shared). Bounded: details can carry numbers.
    _outcomes: dict[tuple[bool, str], RuleOutcome] = field(
        default_factory=dict, repr=False, compare=False
    )

    def evaluate(self, subject: Subject) -> RuleOutcome:
        kind = subject.action.kind
        if kind in self.definition.kinds:
            passed, detail = self.definition.check(subject, self.params)
        else:
            passed, detail = True, f"does not apply to {kind} actions"
        outcome = self._outcomes.get((passed, detail))
        if outcome is not None:
            return outcome
        # Built without re-validation (on the hot path): the fields are ours and consistent by
        # construction (a reason code exactly when failed).
        outcome = RuleOutcome.model_construct(
            rule_id=self.id,
            rule_version=self.version,
            passed=passed,
            reason_code=None if passed else self.reason_code,
            detail=detail,
        )
        if len(self._outcomes) < MAX_SHARED_OUTCOMES:
            self._outcomes[(passed, detail)] = outcome
        return outcome


def _build(spec: RuleSpec, entry: Any) -> Rule:
    definition = _REGISTRY.get(spec.id)
    if definition is None:
        raise PolicyError(f"unknown rule id {spec.id!r}; known: {sorted(_REGISTRY)}")
    try:
        params = definition.params.model_validate(spec.params)
    except ValidationError as error:
        raise PolicyError(f"invalid params for rule {spec.id}: {explain_invalid(error)}") from None
    return Rule(
        spec.id, spec.reason_code, spec.description, params, content_hash(entry), definition
    )


def _duplicates(values: list[str]) -> list[str]:
    return sorted({v for v in values if values.count(v) > 1})


#: The rules that judge the customer alone, whatever the action or channel: what a list of
#: scores for outbound campaigns (``nextbest score``) honours before anyone picks from it.
CUSTOMER_RULES = ("customer.do_not_contact", "customer.vulnerable", "customer.kyc", "customer.aml")


class Policy:
    def __init__(self, rules: tuple[Rule, ...], version: str) -> None:
        self.rules = rules
        self.version = version

    @cached_property
    def customer_rules(self) -> tuple[Rule, ...]:
        """This policy's rules among ``CUSTOMER_RULES`` (a policy may leave one out)."""
        return tuple(rule for rule in self.rules if rule.id in CUSTOMER_RULES)

    @cached_property
    def max_contact_lookback_days(self) -> int:
        """How many days of contact history the rules read: load at least that much."""
        return max((rule.params.lookback_days for rule in self.rules), default=0)

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        document = load_rules_yaml(path, "policy.yaml")
        try:
            parsed = _Policy.model_validate(document)
        except ValidationError as error:
            raise PolicyError(f"invalid policy: {explain_invalid(error)}") from None
        for what, values in (
            ("rule id", [r.id for r in parsed.rules]),
            ("reason code", [r.reason_code for r in parsed.rules]),
        ):
            if repeated := _duplicates(values):
                raise PolicyError(f"duplicate {what}(s) {repeated}: each must be unique")
        rules = tuple(_build(s, e) for s, e in zip(parsed.rules, document["rules"], strict=True))
        return cls(rules, content_hash(document))

    def evaluate(self, subject: Subject) -> tuple[RuleOutcome, ...]:
        """One outcome per rule, in the policy's order."""
        return tuple(rule.evaluate(subject) for rule in self.rules)
