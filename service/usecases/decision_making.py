"""The decision from what was read: scores (reused if they fit what was read), candidates
through the gate, arbitration, reasons for what is delivered, and the record (not yet logged).

It reads nothing itself: ``service.usecases.decisions.DecisionService`` reads, in the safe
order, and logs the record this returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from consent.rules.catalog import Catalog
from consent.rules.experiment import arbitrate_with_control
from consent.rules.policy import Policy
from consent.rules.record import DecisionRecord, GateInputs
from consent.stores.reads import GateRead
from service.adapters.features.online_features import OnlineFeatures
from service.usecases.decision_candidates import gate_candidates
from service.usecases.decision_consent import may_profile, relied_on
from service.usecases.decision_messages import DecideForCustomer, Reasons, Scored
from service.usecases.decision_record import feature_reads, models_used, new_record
from service.usecases.decision_scores import reasons, score_features
from service.usecases.ports import ServedModels

#: The one reason given for a customer the directory does not know: nothing is delivered, and
#: the record holds no facts, consents, features or scores, since there are none to rely on.
CUSTOMER_UNKNOWN: Final = "CUSTOMER_UNKNOWN"


@dataclass(frozen=True)
class DecisionMaker:
    """Decides under one catalog and policy, with the models ``models`` serves."""

    catalog: Catalog
    policy: Policy
    models: ServedModels

    def decide(
        self,
        command: DecideForCustomer,
        now: datetime,
        read: GateRead,
        online: OnlineFeatures | None,
        fallback: str | None,
        scored: Scored | None = None,
    ) -> tuple[DecisionRecord, Reasons]:
        """The record of the decision for ``command`` from the gate's ``read`` and the features
        ``online`` (None if not read; ``fallback`` says why if reading failed), and the reasons
        of what it delivers. ``scored`` is used if it fits what was read, else the models score.
        """
        if read.known is None:
            # Not a customer of the bank's directory: one clear outcome, nothing made up.
            return new_record(
                command,
                now,
                self.policy,
                reason_codes=(CUSTOMER_UNKNOWN,),
                delivery_status="withheld",
                gate=GateInputs(facts=None, limit=command.limit, depends_on={}),
            ), {}
        profiled = may_profile(read.consents)
        if scored is None or not scored.fits(online, profiled):
            # One set of models for the whole decision, whatever a refresh does meanwhile.
            scored = score_features(self.models.snapshot(), online, now, profiled)
        raw = online.values if online is not None and online.known else {}
        gated = gate_candidates(
            command, now, read, scored, raw, catalog=self.catalog, policy=self.policy
        )
        arbitrated = arbitrate_with_control(
            gated.candidates, command.limit, self.policy, command.customer_id
        )
        delivered_ids = arbitrated.delivered
        delivered_needs = [c.need for c in gated.candidates if c.action_id in delivered_ids]
        candidates = [  # built undelivered: only the delivered ones change
            c.model_copy(update={"delivered": True}) if c.action_id in delivered_ids else c
            for c in gated.candidates
        ]
        record = new_record(
            command,
            now,
            self.policy,
            candidates=tuple(candidates),
            delivered=tuple(delivered_ids),
            consents_relied_on=relied_on(read.consents, command.channel),
            features=feature_reads(online, now),
            models=models_used(scored),
            fallback=fallback,
            reason_codes=tuple(
                sorted({code for c in candidates if not c.delivered for code in c.suppressed_by})
            ),
            delivery_status="delivered" if delivered_ids else "nothing_to_deliver",
            rule_versions={rule.id: rule.version for rule in self.policy.rules},
            gate=gated.inputs,
            control=arbitrated.control,
        )
        return record, reasons(delivered_needs, scored)
