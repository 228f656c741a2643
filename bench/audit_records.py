"""The decision records the audit benchmark appends: realistic (ten candidates with the policy's
fifteen rule outcomes each, every scoring feature, consents, models and the gate's inputs),
and quick to make, so that what is measured is the writer."""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from consent.rules.model import Candidate, ConsentGiven, ContactRecord, CustomerFacts, RuleOutcome
from consent.rules.record import DecisionRecord, FeatureValue, GateInputs, ModelUsed
from feature_repo.definitions import SCORING_FEATURES

CUSTOMERS = 20_000
M = TypeVar("M", bound=BaseModel)

#: The policy's fifteen rules (consent/policy.yaml), each evaluated for every candidate.
RULES = (
    ("consent.purpose_channel", "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL"),
    ("consent.profiling", "NO_PROFILING_CONSENT"),
    ("customer.do_not_contact", "DO_NOT_CONTACT"),
    ("customer.vulnerable", "VULNERABLE_CUSTOMER"),
    ("customer.kyc", "KYC_INCOMPLETE"),
    ("customer.aml", "AML_FLAG"),
    ("lending.affordability", "ARREARS_OR_HIGH_DEBT"),
    ("investment.suitability", "UNSUITABLE_INVESTMENT"),
    ("product.age_limits", "AGE_LIMIT"),
    ("product.held_or_in_flight", "ALREADY_HELD_OR_IN_FLIGHT"),
    ("contact.caps", "CONTACT_CAP_REACHED"),
    ("contact.cooloff", "DECLINED_RECENTLY"),
    ("contact.quiet_hours", "QUIET_HOURS"),
    ("customer.open_complaint", "OPEN_COMPLAINT"),
    ("model.min_score", "SCORE_BELOW_THRESHOLD"),
)
ACTIONS = (
    ("mortgage_consultation", "mortgage", "sales", 900.0),
    ("mortgage_rate_switch", "mortgage", "sales", 400.0),
    ("investment_review", "investment", "sales", 600.0),
    ("life_cover_quote", "protection", "sales", 300.0),
    ("card_upgrade", "credit_card", "sales", 150.0),
    ("loan_preapproval", "personal_loan", "sales", 350.0),
    ("term_deposit_offer", "term_deposit", "sales", 120.0),
    ("pension_review", "pension", "sales", 500.0),
    ("fraud_alert_setup", None, "service", 50.0),
    ("kyc_refresh", None, "regulatory", 10.0),
)
#: The features a real decision records: every scoring feature of the online store.
FEATURES = SCORING_FEATURES


def build(model: type[M], **values: Any) -> M:
    """``model(**values)`` that survives the domain gaining fields (a rule version, say): fields
    the model lacks are left out, required ones not given get a placeholder if they are text."""
    fields = model.model_fields
    given = {name: value for name, value in values.items() if name in fields}
    for name, info in fields.items():
        if name not in given and info.is_required():
            if info.annotation is not str:
                raise TypeError(
                    f"{model.__name__}.{name} is required; the benchmark cannot fill it"
                )
            given[name] = "bench-1"
    return model(**given)


class Decisions:
    """Realistic decision records, quick to make: one template per channel, copied with a new
    decision id and customer (model_copy does not validate again)."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        now = datetime.now(UTC)
        self.customers = [f"C{n:07d}" for n in range(1, CUSTOMERS + 1)]
        self._consents: dict[str, tuple[ConsentGiven, ...]] = {}
        self.consents = tuple(
            build(
                ConsentGiven,
                customer_id="C0000000",
                purpose=purpose,
                channel=channel,
                granted=True,
                recorded_at=now - timedelta(days=rng.randrange(30, 900)),
                source="branch_form",
                notice_version="2026-01",
                id=rng.randrange(1, 10**7),
            )
            for purpose, channel in (
                ("marketing", "mobile_app"),
                ("service", "mobile_app"),
                ("profiling", "any"),
            )
        )
        candidates = []
        for i, (action_id, need, kind, value) in enumerate(ACTIONS):
            score = round(rng.random(), 6) if need else None
            rules = tuple(
                build(
                    RuleOutcome,
                    rule_id=rule_id,
                    passed=(i + j) % 7 != 0,
                    reason_code=None if (i + j) % 7 else code,
                    detail=f"{rule_id}: holds for this customer and channel"
                    if (i + j) % 7
                    else f"{rule_id}: does not hold, the action is suppressed",
                    rule_version="sha256:" + hashlib.sha256(rule_id.encode()).hexdigest(),
                )
                for j, (rule_id, code) in enumerate(RULES)
            )
            candidates.append(
                build(
                    Candidate,
                    action_id=action_id,
                    need=need,
                    kind=kind,
                    score=score,
                    value=value,
                    priority=round((score or 1.0) * value, 6),
                    rules=rules,
                    delivered=i < 2,
                )
            )
        features = tuple(
            build(
                FeatureValue,
                name=name,
                value=round(rng.uniform(0, 5000), 2),
                as_of=now - timedelta(seconds=90),
                age_seconds=90.0,
            )
            for name in FEATURES
        )
        models = tuple(
            build(
                ModelUsed, need=need, name=f"nextbest-{need}", version="7", run_id=uuid.uuid4().hex
            )
            for need in ("mortgage", "investment", "protection")
        )
        self.template = build(
            DecisionRecord,
            decision_id="template",
            decided_at=now,
            trigger={
                "kind": "event",
                "event_id": str(uuid.uuid4()),
                "kafka": {"topic": "nextbest.events", "partition": 3, "offset": 1_234_567},
            },
            customer_ref="C0000000",
            channel="mobile_app",
            candidates=tuple(candidates),
            delivered=tuple(c.action_id for c in candidates if c.delivered),
            consents_relied_on=self.consents,
            features=features,
            models=models,
            policy_version="sha256:" + "ab" * 32,
            code_version="0.1.0",
            fallback=None,
            reason_codes=tuple(sorted({code for _, code in RULES})),
            delivery_status="delivered",
            gate=build(
                GateInputs,
                facts=build(
                    CustomerFacts,
                    age=41,
                    income=72_000.0,
                    timezone="Asia/Shanghai",
                    kyc_status="complete",
                    debt_to_income=0.21,
                    risk_level=3,
                    risk_assessed_at=now - timedelta(days=200),
                    holds=("protection",),
                ),
                contacts=tuple(
                    build(
                        ContactRecord,
                        occurred_at=now - timedelta(days=d),
                        channel="mobile_app",
                        kind="impression",
                        action_id="mortgage_consultation",
                        need="mortgage",
                    )
                    for d in (2, 9, 17)
                ),
                in_flight=(),
                limit=3,
            ),
            rule_versions={
                rule_id: "sha256:" + hashlib.sha256(rule_id.encode()).hexdigest()
                for rule_id, _ in RULES
            },
        )

    def make(self, rng: random.Random) -> DecisionRecord:
        # Making the input should cost the writer under test as little CPU as possible: the
        # customers' consents are copied once, and the id is a version-4 UUID from ``rng``
        # (uuid4 reads os.urandom, slower here than everything else this does).
        customer = rng.choice(self.customers)
        consents = self._consents.get(customer)
        if consents is None:
            consents = tuple(c.model_copy(update={"customer_id": customer}) for c in self.consents)
            self._consents[customer] = consents
        return self.template.model_copy(
            update={
                "decision_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "decided_at": datetime.now(UTC),
                "customer_ref": customer,
                "consents_relied_on": consents,
            }
        )
