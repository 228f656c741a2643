"""Every rule id a policy may name: its parameter model, its check, and the kinds of action it
judges (for the others it passes, saying it does not apply). A policy naming an id not listed
here does not load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from consent.rules import (
    contact_checks,
    control_checks,
    customer_checks,
    model_checks,
    product_checks,
)
from consent.rules.model import ActionKind
from consent.rules.params import (
    AffordabilityParams,
    CapsParams,
    CooloffParams,
    HeldParams,
    HoldoutParams,
    NoParams,
    QuietHoursParams,
    RuleParams,
    SuitabilityParams,
    UniversalControlParams,
)
from consent.rules.subject import Subject, Verdict

P = TypeVar("P", bound=RuleParams)
Check = Callable[[Subject, P], Verdict]

_ALL: frozenset[ActionKind] = frozenset({"sales", "service", "regulatory"})
_SALES: frozenset[ActionKind] = frozenset({"sales"})
_NOT_REGULATORY: frozenset[ActionKind] = frozenset({"sales", "service"})


@dataclass(frozen=True)
class RuleDefinition(Generic[P]):
    params: type[P]
    check: Check[P]
    #: Kinds the rule judges; for the others it passes, saying it does not apply.
    kinds: frozenset[ActionKind]


REGISTRY: dict[str, RuleDefinition[Any]] = {
    "consent.purpose_channel": RuleDefinition(NoParams, customer_checks.purpose_channel, _ALL),
    "consent.profiling": RuleDefinition(NoParams, customer_checks.profiling, _ALL),
    "customer.do_not_contact": RuleDefinition(
        NoParams, customer_checks.do_not_contact, _NOT_REGULATORY
    ),
    "customer.vulnerable": RuleDefinition(NoParams, customer_checks.vulnerable, _SALES),
    "customer.kyc": RuleDefinition(NoParams, customer_checks.kyc, _SALES),
    "customer.aml": RuleDefinition(NoParams, customer_checks.aml, _SALES),
    "lending.affordability": RuleDefinition(
        AffordabilityParams, product_checks.affordability, _SALES
    ),
    "investment.suitability": RuleDefinition(SuitabilityParams, product_checks.suitability, _SALES),
    "product.age_limits": RuleDefinition(NoParams, product_checks.age_limits, _ALL),
    "product.held_or_in_flight": RuleDefinition(
        HeldParams, product_checks.held_or_in_flight, _SALES
    ),
    "contact.caps": RuleDefinition(CapsParams, contact_checks.caps, _ALL),
    "contact.cooloff": RuleDefinition(CooloffParams, contact_checks.cooloff, _NOT_REGULATORY),
    "contact.quiet_hours": RuleDefinition(QuietHoursParams, contact_checks.quiet_hours, _ALL),
    "customer.open_complaint": RuleDefinition(NoParams, customer_checks.open_complaint, _SALES),
    "model.served": RuleDefinition(NoParams, model_checks.served, _ALL),
    "model.min_score": RuleDefinition(NoParams, model_checks.min_score, _ALL),
    "features.fresh": RuleDefinition(NoParams, model_checks.fresh, _ALL),
    # Sales only: a service or regulatory action is never held back to measure anything.
    control_checks.UNIVERSAL_RULE: RuleDefinition(
        UniversalControlParams, control_checks.universal, _SALES
    ),
    control_checks.HOLDOUT_RULE: RuleDefinition(HoldoutParams, control_checks.holdout, _SALES),
}
