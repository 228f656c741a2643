"""The gate's checks on the customer: the consent the action needs, and the customer master's
flags (do not contact, vulnerable, KYC, AML, open complaint). Unknown consent is a no, and an
unknown customer fails every flag check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consent.rules.model import CustomerFacts
from consent.rules.params import NoParams
from consent.rules.subject import UNKNOWN_CUSTOMER, ConsentState, Subject, Verdict
from consent.rules.vocabulary import ANY_CHANNEL


def _granted(consents: ConsentState, purpose: str, channel: str) -> bool:
    record = consents.get((purpose, channel))
    return record is not None and record.granted


def purpose_channel(subject: Subject, _: NoParams) -> Verdict:
    purpose, channel = subject.action.purpose, subject.channel
    if subject.action.kind == "regulatory" and purpose != "marketing":
        return True, f"regulatory notice with {purpose} purpose: sent whatever the consent"
    if _granted(subject.consents, purpose, channel):
        return True, f"{purpose} consent granted for {channel}"
    state = subject.consents.get((purpose, channel))
    if state is None:
        return False, f"no {purpose} consent on record for {channel} (unknown consent is a no)"
    return False, f"{purpose} consent for {channel} withdrawn at {state.recorded_at.isoformat()}"


def profiling(subject: Subject, _: NoParams) -> Verdict:
    if subject.action.need is None:
        return True, "not chosen by a personal model"
    if _granted(subject.consents, "profiling", ANY_CHANNEL):
        return True, "profiling consent granted"
    return False, "no profiling consent: the customer may not be scored by a personal model"


@dataclass(frozen=True)
class FlagCheck:
    """A customer-master flag that suppresses when set, and when it may be set: the customer is
    unknown to the store. Each text is the detail the gate records in that case."""

    flag: Callable[[CustomerFacts], bool]
    unknown: str
    is_set: str
    clear: str

    def __call__(self, subject: Subject, _: NoParams) -> Verdict:
        if subject.facts is None:
            return False, f"{UNKNOWN_CUSTOMER}: {self.unknown}"
        if self.flag(subject.facts):
            return False, self.is_set
        return True, self.clear


do_not_contact = FlagCheck(
    lambda facts: facts.do_not_contact,
    unknown="a do-not-contact request may exist",
    is_set="the customer asked not to be contacted",
    clear="no do-not-contact request",
)
vulnerable = FlagCheck(
    lambda facts: facts.vulnerable,
    unknown="the customer may be vulnerable",
    is_set="the customer is flagged vulnerable: no sales actions",
    clear="not flagged vulnerable",
)
aml = FlagCheck(
    lambda facts: facts.aml_flag,
    unknown="an AML flag may be set",
    is_set="AML flag set: no new products",
    clear="no AML flag",
)
open_complaint = FlagCheck(
    lambda facts: facts.open_complaint,
    unknown="a complaint may be open",
    is_set="a complaint is open: no sales actions until it is resolved",
    clear="no open complaint",
)


def kyc(subject: Subject, _: NoParams) -> Verdict:
    status = "unknown" if subject.facts is None else subject.facts.kyc_status
    if status == "complete":
        return True, "KYC complete"
    return False, f"KYC status {status}: no new products until KYC is complete"
