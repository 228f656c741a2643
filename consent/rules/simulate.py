"""What-if: replay recorded decisions under another policy.

Every decision record keeps what the gate saw (consents relied on, customer facts, contact
history, applications in flight, scores, which features were stale and which each action
depended on, the time). Replaying re-evaluates each candidate under
the new policy, re-arbitrates with the recorded priorities and limit, and counts what changes:
actions that would be delivered and were not (added), delivered and would not be (removed), and
per rule how many candidates it newly suppresses or newly lets through.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consent.rules.arbitration import arbitrate
from consent.rules.catalog import Catalog
from consent.rules.control_checks import CONTROL_RULES, HOLDOUT_RULE
from consent.rules.model import Action, Candidate, RuleOutcome
from consent.rules.policy import Policy
from consent.rules.record import DecisionRecord, GateInputs, is_operation
from consent.rules.subject import ConsentState, Subject

#: The rule whose inputs (features' freshness) older records did not keep.
FRESHNESS_RULE = "features.fresh"


@dataclass
class SimulationReport:
    policy_version: str
    decisions: int = 0
    replayed: int = 0
    #: Records written before decisions kept their gate inputs: they cannot be replayed.
    not_replayable: int = 0
    candidates: int = 0
    delivered_before: int = 0
    delivered_after: int = 0
    added: Counter[str] = field(default_factory=Counter)  # by action
    removed: Counter[str] = field(default_factory=Counter)  # by action
    newly_suppressed: Counter[str] = field(default_factory=Counter)  # by rule
    newly_allowed: Counter[str] = field(default_factory=Counter)  # by rule
    removed_by_rule: Counter[str] = field(default_factory=Counter)
    changed_decisions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "decisions": self.decisions,
            "replayed": self.replayed,
            "not_replayable": self.not_replayable,
            "candidates": self.candidates,
            "delivered_before": self.delivered_before,
            "delivered_after": self.delivered_after,
            "actions_added": sum(self.added.values()),
            "actions_removed": sum(self.removed.values()),
            "changed_decisions": self.changed_decisions,
            "added_by_action": dict(sorted(self.added.items())),
            "removed_by_action": dict(sorted(self.removed.items())),
            "removed_by_rule": dict(sorted(self.removed_by_rule.items())),
            "newly_suppressed_by_rule": dict(sorted(self.newly_suppressed.items())),
            "newly_allowed_by_rule": dict(sorted(self.newly_allowed.items())),
        }


def replay(records: Iterable[dict[str, Any]], policy: Policy, catalog: Catalog) -> SimulationReport:
    """``records``: decision records as exported from the audit log (the ``record`` bodies)."""
    report = SimulationReport(policy.version)
    for body in records:
        if is_operation(body):  # a batch run's or an erasure's record: no decision to replay
            continue
        report.decisions += 1
        record = DecisionRecord.model_validate(body)
        if record.gate is None:
            report.not_replayable += 1
            continue
        report.replayed += 1
        _replay_decision(report, record, record.gate, policy, catalog)
    return report


def _replay_decision(
    report: SimulationReport,
    record: DecisionRecord,
    gate: GateInputs,
    policy: Policy,
    catalog: Catalog,
) -> None:
    consents = {(c.purpose, c.channel): c for c in record.consents_relied_on}
    replayed = []
    for candidate in record.candidates:
        action = catalog.actions.get(candidate.action_id)
        if action is None:  # retired from the catalog since: it cannot be re-evaluated
            replayed.append(candidate)
            continue
        outcomes = _reevaluate(policy, record, gate, consents, candidate, action)
        _count_rule_changes(report, candidate.rules, outcomes)
        replayed.append(candidate.model_copy(update={"rules": outcomes}))
        report.candidates += 1
    chosen = arbitrate(replayed, gate.limit, holding=frozenset({HOLDOUT_RULE}))
    after = [c.action_id for c in replayed if c.action_id in chosen and not c.suppressed_by]
    _count_delivery_changes(report, record.delivered, replayed, after)


def _reevaluate(
    policy: Policy,
    record: DecisionRecord,
    gate: GateInputs,
    consents: ConsentState,
    candidate: Candidate,
    action: Action,
) -> tuple[RuleOutcome, ...]:
    outcomes = policy.evaluate(
        Subject(
            action=action,
            channel=record.channel,
            score=candidate.score,
            consents=consents,
            now=record.decided_at,
            facts=gate.facts,
            contacts=gate.contacts,
            in_flight=frozenset(gate.in_flight),
            stale=frozenset(gate.stale),
            depends_on=_depends_on(gate, action),
            models_served=(None if gate.models_served is None else frozenset(gate.models_served)),
        )
    )
    recorded = {r.rule_id: r for r in candidate.rules}
    # A record names no customer, so her control groups cannot be worked out again: the
    # recorded assignment stands, and a record from before control groups assigned none.
    kept = CONTROL_RULES if gate.depends_on is not None else CONTROL_RULES | {FRESHNESS_RULE}
    return tuple(
        (recorded.get(o.rule_id) or _unassigned(o)) if o.rule_id in kept else o for o in outcomes
    )


def _unassigned(outcome: RuleOutcome) -> RuleOutcome:
    if outcome.rule_id not in CONTROL_RULES:
        return outcome
    return RuleOutcome(
        rule_id=outcome.rule_id,
        rule_version=outcome.rule_version,
        passed=True,
        detail="decided before control groups: no assignment recorded",
    )


def _count_rule_changes(
    report: SimulationReport,
    recorded: tuple[RuleOutcome, ...],
    outcomes: tuple[RuleOutcome, ...],
) -> None:
    before = {r.rule_id: r.passed for r in recorded}
    for outcome in outcomes:
        was = before.get(outcome.rule_id, True)
        if was and not outcome.passed:
            report.newly_suppressed[outcome.rule_id] += 1
        elif not was and outcome.passed:
            report.newly_allowed[outcome.rule_id] += 1
    # A rule the new policy drops lets through whatever it suppressed.
    kept = {o.rule_id for o in outcomes}
    for rule_id, was in before.items():
        if rule_id not in kept and not was:
            report.newly_allowed[rule_id] += 1


def _count_delivery_changes(
    report: SimulationReport,
    delivered: Iterable[str],
    replayed: list[Candidate],
    after: list[str],
) -> None:
    before_set, after_set = set(delivered), set(after)
    report.delivered_before += len(before_set)
    report.delivered_after += len(after_set)
    if before_set != after_set:
        report.changed_decisions += 1
    by_id = {c.action_id: c for c in replayed}
    for action_id in sorted(after_set - before_set):
        report.added[action_id] += 1
    for action_id in sorted(before_set - after_set):
        report.removed[action_id] += 1
        for rule in by_id[action_id].rules:
            if not rule.passed:
                report.removed_by_rule[rule.rule_id] += 1


def _depends_on(gate: GateInputs, action: Action) -> frozenset[str]:
    """The features ``action`` depended on when it was decided: its need's served model's, as
    recorded, or else its trigger's (as ``DecisionService`` works them out)."""
    if gate.depends_on is not None and action.need in gate.depends_on:
        return frozenset(gate.depends_on[action.need])
    return action.conditioned_on
