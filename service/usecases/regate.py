"""RM alerts pass the gate again at the moment they reach the RM.

An alert lives for up to ``expire_hours`` (72) after the gate let its decision through. In that
time the customer may withdraw consent, ask not to be contacted, be flagged vulnerable or get an
AML flag. So whenever an alert is about to reach the RM (a queued one opened, alerts listed, a
disposition recorded) the gate is asked again, as of now: the same reads as a decision
(``consent.stores.reads``), the same policy (``consent.rules.policy``), channel ``rm``, the alert's
action and score. The rules that can withdraw an alert are those about consent and the customer
(``regate_rules`` in ``consent/alerts.yaml``); the score, caps and cool-offs were judged when it
was raised, and the alert itself contacts no one.

An alert that fails is withdrawn. The withdrawal is a decision record in the audit log that
corrects the alert's own decision (``corrects``), with ``delivery_status`` ``withheld``: what the
gate read and every rule's outcome, so it can be replayed like any decision. Consent that cannot
be read (or a withdrawal that cannot be logged) means the alert is not delivered now: it is left
out, stays queued, or its disposition is refused with 503; nothing about it changes.

The gate reads each customer once per check, however many of their alerts are checked.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from consent.rules.catalog import Catalog
from consent.rules.documents import PolicyError
from consent.rules.model import Action, Candidate, RuleOutcome
from consent.rules.policy import Policy
from consent.rules.record import DecisionRecord, GateInputs
from consent.rules.subject import Subject
from consent.stores.reads import GateRead
from service import __version__
from service.errors import AuditUnavailable, ConsentUnavailable, NextBestError
from service.usecases.alert_model import (
    ACTIONABLE,
    NOTICE_TEXT,
    RM_CHANNEL,
    Alert,
    Moment,
    Notice,
    Withdrawal,
)
from service.usecases.decision_consent import relied_on
from service.usecases.decision_making import CUSTOMER_UNKNOWN
from service.usecases.decision_record import PENDING_REF
from service.usecases.ports import ConsentReads, DecisionLog

log = logging.getLogger(__name__)

#: The rules whose failure a front line may be told about: the RM may read consents anyway.
CONSENT_RULES = frozenset({"consent.purpose_channel", "consent.profiling"})
#: The alert's action is no longer in the catalog, is switched off, or is not for the RM.
ACTION_RETIRED = "ACTION_RETIRED"


@dataclass(frozen=True)
class Regated:
    """The outcome of asking the gate again about some alerts."""

    #: Still allowed: they may reach the RM.
    allowed: tuple[Alert, ...] = ()
    #: No longer allowed, their withdrawal logged (``status`` withdrawn, with a ``Withdrawal``).
    withdrawn: tuple[Alert, ...] = ()
    #: Could not be checked now (by alert id, with the error a single request answers with).
    unchecked: dict[str, NextBestError] = field(default_factory=dict)

    def stored_as(self, stored: Iterable[Alert]) -> Regated:
        """The same, with the withdrawn alerts as the store now holds them."""
        return Regated(self.allowed, tuple(stored), self.unchecked)


class AlertGate:
    def __init__(
        self,
        reads: ConsentReads,
        policy: Policy,
        catalog: Catalog,
        audit: DecisionLog,
        rules: Iterable[str],
    ) -> None:
        self.reads = reads
        self.policy = policy
        self.catalog = catalog
        self.audit = audit
        self.rules = frozenset(rules)
        unknown = self.rules - {rule.id for rule in policy.rules}
        if unknown:
            raise PolicyError(f"regate_rules: not rules of the policy: {sorted(unknown)}")

    def check(self, alerts: Sequence[Alert], now: datetime, moment: Moment) -> Regated:
        """Ask the gate about ``alerts`` (queued or open ones; others are passed over) as of
        ``now``. The withdrawals are logged before this returns; storing them is the caller's."""
        by_customer: dict[str, list[Alert]] = {}
        for alert in alerts:
            if alert.status in ACTIONABLE:
                by_customer.setdefault(alert.customer_id, []).append(alert)
        allowed: list[Alert] = []
        failed: list[tuple[Alert, DecisionRecord, Withdrawal]] = []
        unchecked: dict[str, NextBestError] = {}
        for customer_id, theirs in by_customer.items():
            try:
                read = self.reads.read(customer_id, now, self.policy.max_contact_lookback_days)
            except Exception as error:  # consent that cannot be read is a no, for now
                log.error("alerts: the gate's read failed, alerts held back: %s", error)
                unchecked.update((a.alert_id, ConsentUnavailable()) for a in theirs)
                continue
            for alert in theirs:
                verdict = self._judge(alert, read, now, moment)
                if verdict is None:
                    allowed.append(alert)
                else:
                    failed.append((alert, *verdict))
        if not failed:
            return Regated(tuple(allowed), (), unchecked)
        try:
            self.audit.append_many(
                [record for _, record, _ in failed], [a.customer_id for a, _, _ in failed]
            )
        except Exception as error:  # not withdrawn without its record: held back, for now
            log.error("alerts: a withdrawal could not be logged, alerts held back: %s", error)
            unchecked.update((a.alert_id, AuditUnavailable()) for a, _, _ in failed)
            return Regated(tuple(allowed), (), unchecked)
        withdrawn = tuple(
            alert.model_copy(update=dict(status="withdrawn", withdrawal=withdrawal))
            for alert, _, withdrawal in failed
        )
        return Regated(tuple(allowed), withdrawn, unchecked)

    def _judge(
        self, alert: Alert, read: GateRead, now: datetime, moment: Moment
    ) -> tuple[DecisionRecord, Withdrawal] | None:
        """None if ``alert`` still passes; else the record and the withdrawal saying why."""
        facts = None if read.known is None else read.known.facts
        action = self.catalog.actions.get(alert.action_id)
        candidates: tuple[Candidate, ...] = ()
        notice: Notice = "not_allowed"
        if read.known is None:
            codes: tuple[str, ...] = (CUSTOMER_UNKNOWN,)
        elif action is None or not action.enabled or RM_CHANNEL not in action.channels:
            codes = (ACTION_RETIRED,)
        else:
            outcomes = self.policy.evaluate(
                Subject(
                    action=action,
                    channel=RM_CHANNEL,
                    score=alert.score,
                    consents=read.consents,
                    now=now,
                    facts=facts,
                    contacts=read.contacts,
                    customer_id=alert.customer_id,
                )
            )
            failing = [o for o in outcomes if not o.passed and o.rule_id in self.rules]
            if not failing:
                return None
            codes = tuple(sorted({o.reason_code or o.rule_id for o in failing}))
            candidates = (_candidate(alert, action, outcomes),)
            if any(o.rule_id in CONSENT_RULES for o in failing):
                notice = "consent_withdrawn"
        record = DecisionRecord(
            decision_id=str(uuid.uuid4()),
            decided_at=now,
            trigger={
                "kind": "alert_regate",
                "moment": moment,
                "action_id": alert.action_id,
                "regate_rules": sorted(self.rules),
            },
            customer_ref=PENDING_REF,
            channel=RM_CHANNEL,
            candidates=candidates,
            delivered=(),
            consents_relied_on=relied_on(read.consents, RM_CHANNEL),
            features=(),
            models=(),
            policy_version=self.policy.version,
            code_version=__version__,
            fallback=None,
            reason_codes=codes,
            delivery_status="withheld",
            corrects=alert.decision_id,
            rule_versions={rule.id: rule.version for rule in self.policy.rules},
            gate=GateInputs(facts=facts, contacts=read.contacts, limit=1),
        )
        withdrawal = Withdrawal(
            at=now,
            notice=notice,
            text=NOTICE_TEXT[notice],
            reason_codes=codes,
            decision_id=record.decision_id,
            moment=moment,
        )
        return record, withdrawal


def _candidate(alert: Alert, action: Action, outcomes: tuple[RuleOutcome, ...]) -> Candidate:
    """The alert's action as a record keeps a candidate: every rule's outcome now (so the
    record replays like a decision), with the score and priority the alert was raised with."""
    propensity = 1.0 if alert.score is None else alert.score
    return Candidate(
        action_id=action.id,
        need=action.need,
        kind=action.kind,
        score=alert.score,
        value=action.value,
        priority=alert.priority,
        rules=outcomes,
        delivered=False,
        propensity=round(propensity, 6),
        lever=action.lever,
    )
