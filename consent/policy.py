"""The action catalog and the compliance policy, both loaded from versioned YAML, and the gate.

The gate evaluates every rule for every candidate and returns each outcome, so every suppression
has a reason. Unknown keys or rule ids fail at load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consent.model import ANY_CHANNEL, Action, ConsentGiven, RuleOutcome


class PolicyError(ValueError):
    code = "invalid_policy"


def content_hash(document: Any) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _load_yaml(path: Path | None, packaged: str) -> Any:
    text = path.read_text() if path else resources.files("consent").joinpath(packaged).read_text()
    return yaml.safe_load(text)


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
        document = _load_yaml(path, "actions.yaml")
        try:
            parsed = _Catalog.model_validate(document)
        except ValidationError as error:
            raise PolicyError(f"invalid action catalog: {error}") from None
        return cls(parsed.actions, content_hash(document))


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    reason_code: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    description: str


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    rules: Annotated[list[RuleSpec], Field(min_length=1)]


ConsentState = Mapping[tuple[str, str], ConsentGiven]


@dataclass(frozen=True)
class Subject:
    """What the gate knows about a candidate: the action, the channel, the score, the consents."""

    action: Action
    channel: str
    score: float | None
    consents: ConsentState


def _consent(consents: ConsentState, purpose: str, channel: str) -> ConsentGiven | None:
    record = consents.get((purpose, channel))
    return record if record is not None and record.granted else None


def _purpose_channel(subject: Subject) -> tuple[bool, str]:
    purpose, channel = subject.action.purpose, subject.channel
    if subject.action.kind == "regulatory" and purpose != "marketing":
        return True, "regulatory notice"
    if _consent(subject.consents, purpose, channel):
        return True, f"{purpose} consent granted for {channel}"
    state = subject.consents.get((purpose, channel))
    if state is None:
        return False, f"no {purpose} consent on record for {channel} (unknown consent is a no)"
    return False, f"{purpose} consent for {channel} withdrawn at {state.recorded_at.isoformat()}"


def _profiling(subject: Subject) -> tuple[bool, str]:
    if subject.action.need is None:
        return True, "not chosen by a personal model"
    if _consent(subject.consents, "profiling", ANY_CHANNEL):
        return True, "profiling consent granted"
    return False, "no profiling consent: the customer may not be scored by a personal model"


def _min_score(subject: Subject) -> tuple[bool, str]:
    if subject.action.need is None:
        return True, "not a scored action"
    if subject.score is None:
        return False, f"no {subject.action.need} score (no consent, features or model to score)"
    threshold = subject.action.min_score
    passed = subject.score >= threshold
    return passed, f"score {subject.score:.3f} {'>=' if passed else '<'} threshold {threshold:.3f}"


_RULES = {
    "consent.purpose_channel": _purpose_channel,
    "consent.profiling": _profiling,
    "model.min_score": _min_score,
}


class Policy:
    def __init__(self, rules: list[RuleSpec], version: str) -> None:
        self.rules = rules
        self.version = version

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        document = _load_yaml(path, "policy.yaml")
        try:
            parsed = _Policy.model_validate(document)
        except ValidationError as error:
            raise PolicyError(f"invalid policy: {error}") from None
        unknown = [r.id for r in parsed.rules if r.id not in _RULES]
        if unknown:
            raise PolicyError(f"unknown rule id(s) {unknown}; known: {sorted(_RULES)}")
        return cls(parsed.rules, content_hash(document))

    def evaluate(self, subject: Subject) -> tuple[RuleOutcome, ...]:
        outcomes = []
        for rule in self.rules:
            passed, detail = _RULES[rule.id](subject)
            outcomes.append(
                RuleOutcome(
                    rule_id=rule.id,
                    passed=passed,
                    reason_code=None if passed else rule.reason_code,
                    detail=detail,
                )
            )
        return tuple(outcomes)
