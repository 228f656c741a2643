"""Raising RM alerts from the stream: who is due one, the discipline, the gate, the alert.

The stream worker's ``AlertRunner`` hands the ``Alerter`` the customers whose features it just
wrote. Only customers with an RM are looked at, and only with profiling consent or service
consent on the RM channel (one query for the whole batch). A look is the decision's own read
and scoring (``DecisionService.score``): the customer's features are read once and scored only
with profiling consent. An alert is considered when

- a need's calibrated score rises to its threshold (``consent/alerts.yaml``) from below, or
- a rule trigger (large inflow, salary change, idle cash, unusual card activity) comes to hold.

Then the gate's read (one per customer considered) gives the RM and household, and the alert
discipline drops what would repeat an alert: one per customer × need (a service action is its
own need) while one is open or queued, or within the window; a household shares its sales
needs. What is left goes through the same gate as API decisions, with channel ``rm`` and only
the actions the trigger concerns; the decision reuses the look's features and scores and that
gate read, and is written to the audit log first (when nothing passes, the log says why). Each
delivered action becomes an alert with talking points built from the reasons. It is stored,
``open`` while the RM has capacity left today, ``queued`` otherwise, and published.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from consent.rules.catalog import Catalog
from consent.rules.model import Action
from feature_repo.explain import describe
from service.adapters.alert_publisher import AlertFeed
from service.adapters.alert_store import AlertStore
from service.adapters.features.online_features import OnlineFeatures
from service.adapters.features.writers import OnlineWriter
from service.adapters.state import StateStore
from service.usecases.alert_model import RM_CHANNEL, Alert, AlertReason, Look
from service.usecases.alert_policy import AlertPolicy
from service.usecases.decision_messages import DecideForCustomer, DecisionMade, Scored
from service.usecases.decisions import DecisionService
from service.usecases.origin import Origin, TimerOrigin
from service.usecases.score_keeping import ScoreKeeper

log = logging.getLogger(__name__)


@dataclass
class AlerterStats:
    rescored: int = 0
    considered: int = 0
    gated: int = 0
    raised: int = 0
    suppressed_by_gate: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "skipped": dict(self.skipped)}


@dataclass(frozen=True)
class Considered:
    """Why a customer's alert is considered: needs that crossed and triggers that fired, and
    the look that found them (the decision reuses its features and scores)."""

    customer_id: str
    crossed: dict[str, float]
    fired: tuple[str, ...]
    origin: Origin | TimerOrigin | None
    scored: Scored


class Alerter:
    def __init__(
        self,
        decisions: DecisionService | Callable[[], DecisionService],
        store: AlertStore,
        policy: AlertPolicy,
        catalog: Catalog,
        memory: StateStore,
        feed: AlertFeed | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        scores: OnlineWriter | None = None,
    ) -> None:
        # Built on first use, in the alerter's thread: loading the models takes seconds, and
        # the stream worker must not wait for it (nor need MLflow before a customer is due).
        self._decisions = decisions
        self.store = store
        self.policy = policy
        self.catalog = catalog
        #: Each customer's scores and holding triggers at their last rescoring, kept beside
        #: the stream's window state: a restart or a rebalance does not forget them.
        self.memory = memory
        self.feed = feed or AlertFeed()
        self.clock = clock
        #: Where the scores of every changed customer are kept ready (None: not kept).
        self._scores = scores
        self._keeper: ScoreKeeper | None = None
        self.stats = AlerterStats()
        self._triggers = {t.id: t for t in policy.triggers}
        self._actions_of_need: dict[str, tuple[str, ...]] = {}
        for action in catalog.actions.values():
            if action.need and action.enabled and RM_CHANNEL in action.channels:
                self._actions_of_need.setdefault(action.need, ())
                self._actions_of_need[action.need] += (action.id,)

    @property
    def decisions(self) -> DecisionService:
        if not isinstance(self._decisions, DecisionService):
            self._decisions = self._decisions()
        return self._decisions

    @property
    def ready(self) -> bool:
        """Whether the decision service (the models) is built: nothing waits on building it."""
        return isinstance(self._decisions, DecisionService)

    @property
    def keeper(self) -> ScoreKeeper | None:
        """Keeps the changed customers' scores ready, with the decision service's models."""
        if self._keeper is None and self._scores is not None:
            decisions = self.decisions
            self._keeper = ScoreKeeper(
                decisions.models,
                decisions.features.read,
                self._scores,
                decisions.registry,
                self.catalog,
                self.clock,
            )
        return self._keeper

    def prepare(self) -> None:
        """Build the decision service (it loads the models) before the first customer is due."""
        self._decisions = self.decisions

    def process(self, customers: Mapping[str, Origin | TimerOrigin | None]) -> list[Alert]:
        """Score ``customers`` and keep their scores ready; raise, gate, store and publish the
        alerts due. Returns the alerts stored (open or queued)."""
        kept: Mapping[str, OnlineFeatures] = {}
        if (keeper := self.keeper) is not None:
            try:
                kept = keeper.keep(list(customers))
            except Exception as error:  # decisions then score in process; alerts go on
                log.warning("scores not kept for %d customer(s): %s", len(customers), error)
                self.stats.skip("scores_not_kept", len(customers))
        considered = self.consider(customers, kept)
        now = self.clock()
        new: list[Alert] = []
        for item in considered:
            new += self._gate(item, now)
        stored = self.store.add(new, self.policy.rm_daily_capacity, now) if new else []
        self.stats.raised += len(stored)
        if stored:
            self.feed.publish(stored)
        return stored

    def consider(
        self,
        customers: Mapping[str, Origin | TimerOrigin | None],
        kept: Mapping[str, OnlineFeatures] | None = None,
    ) -> list[Considered]:
        """Who has a need crossing its threshold or a trigger coming to hold (with an RM, and
        consent to be looked at for it). One query tells who may be looked at and one read
        gives their last scores; features are read and scored only for them, unless ``kept``
        has them read with their scores just kept."""
        looks = self.store.lookable(list(customers))
        for look in looks.values():
            if look.skip:
                self.stats.skip(look.skip)
        ready = [c for c in customers if c in looks and not looks[c].skip]
        memory = dict(zip(ready, self.memory.get_many(ready), strict=True))
        remembered: dict[str, bytes] = {}
        out: list[Considered] = []
        for customer_id in ready:
            scored = self._look(customer_id, looks[customer_id], (kept or {}).get(customer_id))
            if scored is None:
                continue
            item, remembered[customer_id] = self._judge(
                customer_id, scored, memory[customer_id], customers[customer_id]
            )
            if item is not None:
                out.append(item)
        self.memory.put_many(remembered)
        self.stats.considered += len(out)
        return out

    def _look(self, customer_id: str, look: Look, online: OnlineFeatures | None) -> Scored | None:
        """The customer's features, read and scored as a decision does (None: unreadable):
        the scores just kept are used, as a decision would."""
        if online is None:
            try:
                online = self.decisions.features.read(customer_id)
            except Exception as error:
                log.warning("alerts: online read failed, customer not rescored: %s", error)
                self.stats.skip("online_store_unavailable")
                return None
        self.stats.rescored += 1
        return self.decisions.score(online, self.clock(), look.may_profile)

    def _judge(
        self,
        customer_id: str,
        scored: Scored,
        memo: bytes | None,
        origin: Origin | TimerOrigin | None,
    ) -> tuple[Considered | None, bytes]:
        """What crossed and fired since the customer's last look, and what to remember now."""
        thresholds = self.policy.thresholds
        scores = {need: s for need, s in scored.scores.items() if need in thresholds}
        # Triggers are judged on what is stored, as the gate's own conditions are.
        stored = scored.online.values if scored.online is not None else {}
        holding = frozenset(t.id for t in self.policy.triggers if t.holds(stored))
        before_scores, before_holding = _recalled(memo)
        crossed = {
            need: score
            for need, score in scores.items()
            if score >= thresholds[need] and before_scores.get(need, 0.0) < thresholds[need]
        }
        fired = tuple(sorted(holding - before_holding))
        item = Considered(customer_id, crossed, fired, origin, scored) if crossed or fired else None
        return item, _memo(scores, holding)

    def _gate(self, item: Considered, now: datetime) -> list[Alert]:
        """The gate's read, the discipline, then the decision (logged first), then the alerts."""
        seen = self.decisions.see(item.customer_id, item.scored)
        known = seen.read.known
        if known is None or known.rm_id is None:
            self.stats.skip("no_rm")
            return []
        actions = self._actions(item)
        topics = {a.id: a.need or a.id for a in actions}
        blocked = self.store.blocked(
            item.customer_id,
            known.household_id,
            topics.values(),
            [a.need for a in actions if a.need],
            now,
            timedelta(hours=self.policy.window_hours),
        )
        for reason in blocked.values():
            self.stats.skip(reason)
        allowed = frozenset(a for a, topic in topics.items() if topic not in blocked)
        if not allowed:
            return []
        trigger: dict[str, Any] = {
            "kind": "stream_trigger",
            "crossed": {need: round(score, 6) for need, score in sorted(item.crossed.items())},
            "fired": list(item.fired),
            "alert_policy_version": self.policy.content_version,
        }
        if item.origin is not None:
            trigger.update(item.origin.in_trigger())
        command = DecideForCustomer(
            customer_id=item.customer_id,
            channel=RM_CHANNEL,
            limit=self.policy.limit,
            trigger=trigger,
            actions=allowed,
        )
        made = self.decisions.decide(command, seen)
        self.stats.gated += 1
        alerts = self._alerts(made, known.household_id, known.rm_id, item, now)
        if not alerts:
            self.stats.suppressed_by_gate += 1
        return alerts

    def _actions(self, item: Considered) -> list[Action]:
        """The RM actions of the needs that crossed and of the triggers that fired."""
        ids: dict[str, None] = {}
        for need in item.crossed:
            ids.update(dict.fromkeys(self._actions_of_need.get(need, ())))
        for trigger_id in item.fired:
            ids.update(dict.fromkeys(self._triggers[trigger_id].actions))
        return [self.catalog.actions[action_id] for action_id in ids]

    def _alerts(
        self,
        made: DecisionMade,
        household_id: str | None,
        rm_id: str,
        item: Considered,
        now: datetime,
    ) -> list[Alert]:
        out = []
        values = made.record.feature_values()
        for candidate in made.record.candidates:
            if not candidate.delivered:
                continue
            action = self.catalog.actions[candidate.action_id]
            reasons = [
                AlertReason(feature=r.feature, value=r.value, text=r.text)
                for r in made.reasons.get(candidate.need or "", ())
            ]
            fired = [t for t in item.fired if candidate.action_id in self._triggers[t].actions]
            for trigger_id in fired:  # a trigger's own conditions are reasons too
                for condition in self._triggers[trigger_id].when:
                    value = values.get(condition.feature)
                    text = describe(condition.feature, value)
                    reasons.append(AlertReason(feature=condition.feature, value=value, text=text))
            out.append(
                Alert(
                    alert_id=str(uuid.uuid4()),
                    decision_id=made.record.decision_id,
                    customer_id=made.customer_id,
                    household_id=household_id,
                    rm_id=rm_id,
                    topic=action.need or action.id,
                    need=action.need,
                    action_id=action.id,
                    title=action.title,
                    kind=action.kind,
                    score=candidate.score,
                    priority=candidate.priority,
                    status="queued",
                    created_at=now,
                    opened_at=None,
                    expires_at=now + timedelta(hours=self.policy.expire_hours),
                    triggers=tuple(fired),
                    reasons=tuple(_unique(reasons)),
                    talking_points=talking_points(
                        action, candidate.score, reasons, [self._triggers[t].title for t in fired]
                    ),
                    origin=item.origin.as_dict() if item.origin else {},
                )
            )
        return out


def talking_points(
    action: Action,
    score: float | None,
    reasons: Sequence[AlertReason],
    triggers: Sequence[str],
) -> tuple[str, ...]:
    """What the RM can say, from the reasons: the headline, each reason, the suggestion."""
    points = []
    if action.need and score is not None:
        points.append(f"{action.need.replace('_', ' ').capitalize()} interest {score:.2f}")
    points += [f"{t}" for t in triggers]
    points += [r.text for r in reasons]
    points.append(f"Suggested: {action.title[0].lower()}{action.title[1:]}")
    return tuple(dict.fromkeys(points))


def _unique(reasons: list[AlertReason]) -> list[AlertReason]:
    """One reason per feature, the first (a trigger's condition may also be a model's)."""
    first: dict[str, AlertReason] = {}
    for reason in reasons:
        first.setdefault(reason.feature, reason)
    return list(first.values())


def _memo(scores: Mapping[str, float], holding: frozenset[str]) -> bytes:
    return json.dumps(
        {"scores": {k: round(v, 6) for k, v in scores.items()}, "holding": sorted(holding)},
        separators=(",", ":"),
    ).encode()


def _recalled(memo: bytes | None) -> tuple[dict[str, float], frozenset[str]]:
    """The last scores and holding triggers; a customer never rescored has none (so a score
    above its threshold, or a trigger holding, counts as new)."""
    if memo is None:
        return {}, frozenset()
    data = json.loads(memo)
    return dict(data["scores"]), frozenset(data["holding"])
