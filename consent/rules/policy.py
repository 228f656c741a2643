"""The compliance policy, loaded from versioned YAML, and its evaluation by the gate.

A policy lists rules by id; each id names an entry of the registry (``registry.py``), with its
parameter model and its check. The gate evaluates every rule for every candidate and returns each
outcome, passed or not, so every suppression has a reason and every pass says why. Unknown keys,
unknown rule ids and bad parameters fail at load. Facts the gate does not know take the safe
side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from consent.rules.documents import PolicyError, content_hash, load_rules_yaml, validated
from consent.rules.model import RuleOutcome
from consent.rules.params import RuleParams
from consent.rules.registry import REGISTRY, RuleDefinition
from consent.rules.subject import Subject


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
    params: RuleParams
    version: str
    definition: RuleDefinition[Any] = field(repr=False)
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
    definition = REGISTRY.get(spec.id)
    if definition is None:
        raise PolicyError(f"unknown rule id {spec.id!r}; known: {sorted(REGISTRY)}")
    params = validated(definition.params, spec.params, f"params for rule {spec.id}")
    return Rule(
        spec.id, spec.reason_code, spec.description, params, content_hash(entry), definition
    )


def _duplicates(values: list[str]) -> list[str]:
    return sorted({v for v in values if values.count(v) > 1})


#: The rules that judge the customer alone, whatever the action or channel: what a list of
#: scores for outbound campaigns (``nextbest score``) honours before anyone picks from it.
CUSTOMER_RULES = (
    "customer.do_not_contact",
    "customer.vulnerable",
    "customer.kyc",
    "customer.aml",
    "control.universal",
)


class Policy:
    def __init__(self, rules: tuple[Rule, ...], version: str) -> None:
        self.rules = rules
        self.version = version

    @cached_property
    def customer_rules(self) -> tuple[Rule, ...]:
        """This policy's rules among ``CUSTOMER_RULES`` (a policy may leave one out)."""
        return tuple(rule for rule in self.rules if rule.id in CUSTOMER_RULES)

    def rule(self, rule_id: str) -> Rule | None:
        """This policy's rule ``rule_id``, if it has one."""
        return self._by_id.get(rule_id)

    @cached_property
    def _by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}

    @cached_property
    def max_contact_lookback_days(self) -> int:
        """How many days of contact history the rules read: load at least that much."""
        return max((rule.params.lookback_days for rule in self.rules), default=0)

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        document = load_rules_yaml(path, "policy.yaml")
        parsed = validated(_Policy, document, "policy")
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
