"""Arbitration under the policy's control groups (``control_checks``): what is delivered, and
the assignment the decision record keeps so that lift can be measured against it.

A held-out action keeps its place: the customer gets nothing in its slot rather than the next
best, so the comparison with the customers who got it is "this action or nothing". A customer
in the universal control group gets no sales action; service and regulatory actions fill the
places as they would with sales switched off, and the record names the sales actions she would
have got (her counterfactual)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from consent.rules.arbitration import arbitrate
from consent.rules.control_checks import (
    CONTROL_RULES,
    HOLDOUT_RULE,
    UNIVERSAL_RULE,
    in_universal_control,
)
from consent.rules.model import Candidate
from consent.rules.params import HoldoutParams, RuleParams, UniversalControlParams
from consent.rules.policy import Policy, Rule
from consent.rules.record import ActionAssignment, Assignment, ControlAssignment

P = TypeVar("P", bound=RuleParams)


def _params(rule: Rule | None, kind: type[P]) -> P | None:
    if rule is None:
        return None
    assert isinstance(rule.params, kind), "the registry gives each rule id its own params"
    return rule.params


def _assigned(assignment: Assignment, probability: float) -> ActionAssignment:
    # On every decision's path: built without validation (the values are ours).
    return ActionAssignment.model_construct(
        assignment=assignment, probability=round(probability, 6)
    )


@dataclass(frozen=True)
class Arbitrated:
    delivered: list[str]
    control: ControlAssignment | None


def arbitrate_with_control(
    candidates: Sequence[Candidate], limit: int, policy: Policy, customer_id: str
) -> Arbitrated:
    universal_rule, holdout_rule = policy.rule(UNIVERSAL_RULE), policy.rule(HOLDOUT_RULE)
    if universal_rule is None and holdout_rule is None:
        return Arbitrated(arbitrate(candidates, limit), None)
    universal = _params(universal_rule, UniversalControlParams)
    holdout = _params(holdout_rule, HoldoutParams)
    share = 0.0 if universal is None else universal.share
    control = universal is not None and in_universal_control(universal, customer_id)
    by_id = {c.action_id: c for c in candidates}
    chosen = arbitrate(candidates, limit, holding=frozenset({HOLDOUT_RULE}))
    delivered = [a for a in chosen if all(r.passed for r in by_id[a].rules)]
    if control:
        # Her counterfactual: what she would have got with no control group.
        would_have = arbitrate(candidates, limit, holding=CONTROL_RULES)
        sales = [a for a in would_have if by_id[a].kind == "sales"]
        actions = {a: _assigned("universal_control", share) for a in sales}
    else:
        sales = [a for a in chosen if by_id[a].kind == "sales"]
        actions = {a: _treated(a, a in delivered, share, holdout) for a in sales}
    return Arbitrated(
        delivered,
        ControlAssignment.model_construct(  # ours and consistent: built without validation
            group="control" if control else "treatment",
            generation=None if universal is None else universal.generation,
            share=share,
            holdout_generation=None if holdout is None else holdout.generation,
            actions=actions,
        ),
    )


def _treated(
    action_id: str, delivered: bool, share: float, holdout: HoldoutParams | None
) -> ActionAssignment:
    held = 0.0 if holdout is None else holdout.share(action_id)
    if delivered:
        return _assigned("treatment", (1 - share) * (1 - held))
    return _assigned("held_out", (1 - share) * held)
