"""A decision's record waiting to be written: serialised by its caller, outside the chain's lock,
with a placeholder where the customer's pseudonym goes once the writer knows it."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from dataclasses import dataclass, field

from consent.rules.chain import PSEUDONYM_HEX_DIGITS, PSEUDONYM_PREFIX, Appended, mentions
from consent.rules.record import DecisionRecord

MAX_CUSTOMER_ID = 64  # customer_keys.customer_id
#: Records one group-commit transaction takes at most (also bounds SQL parameter lists).
MAX_BATCH = 500
#: Records that may wait for a writer at once; beyond, an append fails at once (the API bounds
#: its decisions in flight well below this: it is the last line).
MAX_WAITING = 4 * MAX_BATCH

# The placeholder stands in for the pseudonym in a body until the writer knows it: random per
# process (no record can hold one by chance) and counted rather than drawn per record, as
# drawing from the system's random source costs more than hashing the record.
_PLACEHOLDER_BASE = secrets.token_hex(PSEUDONYM_HEX_DIGITS // 4)
_placeholders = itertools.count()


@dataclass(eq=False)
class PendingRecord:
    """One record waiting to be written, and how its writing ended."""

    customer_id: str
    decision_id: str
    body: str  # the record's JSON, naming the customer by ``placeholder`` until the key is known
    placeholder: str
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next group rather than with an outcome
    trips: int = 0  # the times the writer had tripped when it was admitted
    result: Appended | None = None
    error: BaseException | None = None

    @classmethod
    def of(cls, record: DecisionRecord, customer_id: str | None) -> PendingRecord:
        """Serialised by the caller, so the writer holding the chain's lock only substitutes
        the pseudonym: a random token of the pseudonym's length and alphabet stands in for it,
        which cannot occur in the record by chance."""
        raw = record.customer_ref if customer_id is None else customer_id
        if not 1 <= len(raw) <= MAX_CUSTOMER_ID:
            raise ValueError(f"a customer id must have 1 to {MAX_CUSTOMER_ID} characters")
        if raw.startswith(PSEUDONYM_PREFIX):
            raise ValueError("pass the customer's id, not a pseudonym: the log makes its own")
        placeholder = PSEUDONYM_PREFIX + f"{_PLACEHOLDER_BASE}{next(_placeholders):016x}"
        consents = []
        for consent in record.consents_relied_on:
            if consent.customer_id != raw:
                raise ValueError(f"decision {record.decision_id} relies on another's consent")
            consents.append(consent.model_copy(update={"customer_id": placeholder}))
        document = record.model_copy(
            update={"customer_ref": placeholder, "consents_relied_on": tuple(consents)}
        ).model_dump_json()
        # Only the trigger comes from outside (a request's context, an event's coordinates):
        # the rest is made by our code from the catalog, the policy, features and facts, none of
        # which carries an id, and searching it refused customers whose id is also a word there
        # ("protection", "rm", "0").
        if mentions(json.dumps(record.trigger), raw):
            # Somewhere the log does not pseudonymise (a trigger, a detail) carries the id.
            raise ValueError(
                f"decision {record.decision_id}: the record carries the customer's id outside "
                "customer_ref and the consents; it would survive erasure, so it is not written"
            )
        return cls(raw, record.decision_id, document, placeholder)

    def settle(self, outcome: Appended | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.result = outcome
        self.wake.set()

    def outcome(self) -> Appended:
        if self.error is not None:
            raise self.error
        assert self.result is not None, "a request is settled before its caller returns"
        return self.result
