"""Deciding for one customer: consent, features, scores, the gate, arbitration, the audit record.

The order is the safe one: consent is read first (no consent state, no delivery); personal
features are read and models run only with profiling consent; every candidate passes every rule;
the decision is appended to the audit log before it is returned.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from consent.audit import Appended, AuditLog
from consent.model import (
    ANY_CHANNEL,
    Candidate,
    ConsentGiven,
    DecisionRecord,
    FeatureValue,
    ModelUsed,
)
from consent.policy import Catalog, Policy, Subject
from consent.registry import ConsentRegistry
from service import __version__
from service.errors import AuditUnavailable, ConsentUnavailable
from service.features import OnlineFeatures
from service.models import NeedModel

log = logging.getLogger(__name__)

#: How many of a score's strongest positive contributions are reported as its reasons.
TOP_REASONS = 3


class FeatureReader(Protocol):
    def read(self, customer_id: str) -> OnlineFeatures: ...


@dataclass(frozen=True)
class DecideForCustomer:
    customer_id: str
    channel: str
    limit: int = 3
    context: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reason:
    feature: str
    value: float | None
    contribution: float


@dataclass(frozen=True)
class DecisionMade:
    record: DecisionRecord
    audit: Appended
    reasons: dict[str, tuple[Reason, ...]]


class DecisionService:
    def __init__(
        self,
        registry: ConsentRegistry,
        features: FeatureReader,
        models: Mapping[str, NeedModel],
        catalog: Catalog,
        policy: Policy,
        audit: AuditLog,
    ) -> None:
        self.registry = registry
        self.features = features
        self.models = models
        self.catalog = catalog
        self.policy = policy
        self.audit = audit

    def decide(self, command: DecideForCustomer) -> DecisionMade:
        now = datetime.now(UTC)
        try:
            consents = self.registry.current(command.customer_id)
        except Exception as error:  # any failure to read consent means no delivery
            log.error("consent read failed: %s", error)
            raise ConsentUnavailable() from error

        profiling = consents.get(("profiling", ANY_CHANNEL))
        may_profile = profiling is not None and profiling.granted
        online: OnlineFeatures | None = None
        fallback = None
        if may_profile:
            try:
                online = self.features.read(command.customer_id)
            except Exception as error:
                log.warning("online store read failed, deciding without features: %s", error)
                fallback = "online_store_unavailable"

        # One consistent set of models for the whole decision, whatever a refresh does meanwhile.
        snapshot = getattr(self.models, "snapshot", None)
        models = snapshot() if snapshot else dict(self.models)
        scores: dict[str, float] = {}
        reasons: dict[str, tuple[Reason, ...]] = {}
        if online is not None and online.known:
            for need, model in models.items():
                probability, contributions = model.score(online.values)
                scores[need] = probability
                reasons[need] = tuple(
                    Reason(name, online.values.get(name), c)
                    for name, c in contributions[:TOP_REASONS]
                    if c > 0
                )

        candidates = []
        for action in self.catalog.actions.values():
            if command.channel not in action.channels:
                continue
            score = scores.get(action.need) if action.need else None
            outcomes = self.policy.evaluate(Subject(action, command.channel, score, consents))
            weight = 1.0 if score is None else score
            candidates.append(
                Candidate(
                    action_id=action.id,
                    need=action.need,
                    kind=action.kind,
                    score=score,
                    value=action.value,
                    priority=round(weight * action.value, 6),
                    rules=outcomes,
                    delivered=False,
                )
            )
        delivered_ids = self._arbitrate(candidates, command.limit)
        candidates = [
            c.model_copy(update={"delivered": c.action_id in delivered_ids}) for c in candidates
        ]
        relied_on = self._relied_on(consents, command.channel)
        record = DecisionRecord(
            decision_id=str(uuid.uuid4()),
            decided_at=now,
            trigger=command.trigger or {"kind": "api_request", "context": command.context},
            customer_ref=command.customer_id,
            channel=command.channel,
            candidates=tuple(candidates),
            delivered=tuple(delivered_ids),
            consents_relied_on=relied_on,
            features=self._feature_values(online, now),
            models=tuple(
                ModelUsed(need=m.need, name=m.name, version=m.version, run_id=m.run_id)  # type: ignore[arg-type]
                for m in models.values()
                if m.need in scores
            ),
            policy_version=self.policy.version,
            code_version=__version__,
            fallback=fallback,
            reason_codes=tuple(
                sorted({code for c in candidates if not c.delivered for code in c.suppressed_by})
            ),
            delivery_status="delivered" if delivered_ids else "nothing_to_deliver",
        )
        try:
            appended = self.audit.append(record)
        except Exception as error:
            log.error("audit append failed: %s", error)
            raise AuditUnavailable() from error
        return DecisionMade(record, appended, reasons)

    @staticmethod
    def _arbitrate(candidates: list[Candidate], limit: int) -> list[str]:
        """Highest priority first, at most one action per need, at most ``limit`` in all."""
        chosen: list[str] = []
        needs: set[str] = set()
        for candidate in sorted(candidates, key=lambda c: (-c.priority, c.action_id)):
            if len(chosen) >= limit:
                break
            if any(not r.passed for r in candidate.rules):
                continue
            if candidate.need is not None and candidate.need in needs:
                continue
            chosen.append(candidate.action_id)
            if candidate.need is not None:
                needs.add(candidate.need)
        return chosen

    @staticmethod
    def _relied_on(
        consents: dict[tuple[str, str], ConsentGiven], channel: str
    ) -> tuple[ConsentGiven, ...]:
        keys = [(p, channel) for p in ("marketing", "service")] + [("profiling", ANY_CHANNEL)]
        return tuple(consents[k] for k in keys if k in consents)

    @staticmethod
    def _feature_values(online: OnlineFeatures | None, now: datetime) -> tuple[FeatureValue, ...]:
        if online is None or online.as_of is None:
            return ()
        age = (now - online.as_of).total_seconds()
        return tuple(
            FeatureValue(name=name, value=value, as_of=online.as_of, age_seconds=round(age, 3))
            for name, value in online.values.items()
        )
