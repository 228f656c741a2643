"""What a decision is asked with and answers with, and what passes between its steps.

``DecideForCustomer`` is the command and ``DecisionMade`` its result, with the ``Reason``s of
what was delivered. ``Scored`` and ``Seen`` carry a customer as read and scored before the
decision is asked for (the alerter's look), so the decision reads and scores them only once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from consent.rules.chain import Appended
from consent.rules.record import DecisionRecord
from consent.stores.reads import GateRead
from feature_repo.explain import describe
from service.adapters.features.online_features import OnlineFeatures, StoredScores
from service.usecases.ports import Scorer

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class DecideForCustomer:
    customer_id: str
    channel: str
    limit: int = 3
    context: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    #: Only these actions are candidates (an alert's trigger concerns only them); None: all.
    actions: frozenset[str] | None = None


@dataclass(frozen=True)
class Reason:
    feature: str
    value: float | None
    contribution: float

    @property
    def text(self) -> str:
        """The reason in words ("loan calculator views, last 7 days: 5")."""
        return describe(self.feature, self.value)


#: The reasons of a decision's delivered needs, by need.
Reasons = dict[str, tuple[Reason, ...]]


@dataclass(frozen=True)
class Scored:
    """A customer's online features as a decision uses them, and what the models made of them.

    The alerter scores a customer this way to see whether an alert is due; the decision that
    alert carries reuses it (``Seen``), so the features are read and the models run once."""

    online: OnlineFeatures | None
    #: Whether the models were allowed to run (profiling consent, as read then).
    profiled: bool
    #: The values with stale features served as missing, and the stale features' names.
    values: dict[str, float | None]
    stale: frozenset[str]
    #: One consistent set of models, whatever a refresh does meanwhile.
    models: Mapping[str, Scorer]
    scores: dict[str, float]
    #: The rows the models scored, by their features (models on the same features share one).
    rows: dict[tuple[str, ...], np.ndarray]
    #: The scores kept ready that were used instead of scoring (None: scored in process).
    kept: StoredScores | None = None

    def fits(self, online: OnlineFeatures | None, profiled: bool) -> bool:
        """Whether these are the scores a decision reading ``online`` with ``profiled`` makes."""
        return self.online is online and self.profiled == profiled


@dataclass(frozen=True)
class Seen:
    """A customer as read for a decision before the decision is asked for: the gate's read as
    of ``at``, and their features as read and scored (``Scored``)."""

    at: datetime
    read: GateRead
    scored: Scored


@dataclass(frozen=True)
class DecisionMade:
    customer_id: str
    record: DecisionRecord
    audit: Appended
    reasons: Reasons
