"""What the gate judges: a ``Subject`` (what it knows about one candidate action for one
customer at one moment), and the ``Verdict`` a rule's check gives on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consent.rules.model import Action, ConsentGiven, ContactRecord, CustomerFacts

#: The current consent per (purpose, channel). The key is loosely typed because a Mapping's key
#: type is invariant: a dict keyed by the Purpose and channel literals must fit too.
ConsentState = Mapping[tuple[Any, Any], ConsentGiven]

#: Whether a rule passes, and the detail that says why (or why not).
Verdict = tuple[bool, str]

#: How a check begins its detail when the customer is unknown to the store (it fails safe).
UNKNOWN_CUSTOMER = "customer unknown to the store"


@dataclass(frozen=True)
class Subject:
    """What the gate knows about one candidate action for one customer at one moment."""

    action: Action
    channel: str
    score: float | None
    consents: ConsentState
    now: datetime
    #: None: the customer is unknown to the store, and every fact rule fails safe.
    facts: CustomerFacts | None = None
    #: The customer's and their household's recent contact history.
    contacts: tuple[ContactRecord, ...] = ()
    #: Needs with an application in flight.
    in_flight: frozenset[str] = frozenset()
    #: Features older than their allowed age (served as missing), and the features this
    #: action depends on: its model's most important ones, or its trigger's.
    stale: frozenset[str] = frozenset()
    depends_on: frozenset[str] = frozenset()
    #: Needs with a model served: one registered under the serving alias that met the quality
    #: floor. None: not recorded (a replay of a decision made before it was kept).
    models_served: frozenset[str] | None = None
    #: The customer's id, for the control groups' assignment alone (``control_checks``); never
    #: recorded. None: not known here (a replay), and a control rule fails safe.
    customer_id: str | None = None
    #: Shared by the subjects of one decision: what rules work out from the customer alone
    #: (contact counts) is worked out once, not once per candidate.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Contact history and risk assessments carry aware times; a naive clock cannot be
        # compared with them, and guessing its zone could open a cool-off early.
        if self.now.utcoffset() is None:
            raise ValueError("Subject.now must be an aware datetime")
