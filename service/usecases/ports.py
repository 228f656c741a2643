"""What deciding needs from the outside world, declared here (the use case's side) and
provided by the adapters: reads of consent and features, the served models, the audit log.

Each interface states its capabilities: ``asynchronous`` says whether ``read_async`` reads
without a thread (PostgreSQL, Redis); an implementation without an asynchronous form says
``False`` and still provides ``read_async`` and ``close_async``, so callers never have to ask
whether a method exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from consent.rules.chain import Appended
from consent.rules.record import DecisionRecord
from consent.stores.reads import GateRead
from service.adapters.features.online_features import OnlineFeatures
from service.adapters.metrics import ServedModel

if TYPE_CHECKING:
    import numpy as np


class ConsentReads(Protocol):
    """The gate's reads about one customer: consents, directory entry, recent contacts."""

    @property
    def asynchronous(self) -> bool: ...

    def read(self, customer_id: str, now: datetime, days: int) -> GateRead: ...

    def read_many(
        self, customer_ids: Iterable[str], now: datetime, days: int
    ) -> dict[str, GateRead]: ...

    async def read_async(self, customer_id: str, now: datetime, days: int) -> GateRead: ...

    async def close_async(self) -> None: ...


class OnlineFeatureReads(Protocol):
    """A customer's online features."""

    @property
    def asynchronous(self) -> bool: ...

    def read(self, customer_id: str) -> OnlineFeatures: ...

    async def read_async(self, customer_id: str) -> OnlineFeatures: ...

    async def close_async(self) -> None: ...


class Scorer(ServedModel, Protocol):
    """A need model as decisions use it (``service.adapters.models.NeedModel``)."""

    @property
    def run_id(self) -> str: ...

    @property
    def digest(self) -> str:
        """The digest of the artifact files it was loaded from."""
        ...

    @property
    def features(self) -> tuple[str, ...]: ...

    @property
    def depends_on(self) -> frozenset[str]: ...

    def row(self, values: Mapping[str, float | None]) -> np.ndarray: ...

    def probability(self, row: np.ndarray) -> float: ...

    def probability_each(self, rows: np.ndarray) -> list[float]:
        """``probability`` of each of ``rows``, the model run once over all of them."""
        ...

    def contributions(self, row: np.ndarray) -> list[tuple[str, float]]: ...

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        """``probability`` of many rows at once (the scores kept ready)."""
        ...

    def contributions_of(self, rows: np.ndarray) -> np.ndarray:
        """Each row's contribution per feature, in ``features`` order: [row, feature]."""
        ...


class ServedModels(Protocol):
    """The models served now, by need. A refresh may replace them at any time, so a decision
    takes one ``snapshot`` and uses it throughout."""

    def snapshot(self) -> Mapping[str, Scorer]: ...


class FixedModels(dict[str, Scorer]):
    """Models that never change (a batch run's, a test's): the snapshot is the set itself."""

    def snapshot(self) -> Mapping[str, Scorer]:
        return self


class DecisionLog(Protocol):
    """Where every decision is recorded before it is returned."""

    def append(self, record: DecisionRecord, customer_id: str | None = None) -> Appended: ...

    async def append_async(
        self, record: DecisionRecord, customer_id: str | None = None
    ) -> Appended: ...

    def append_many(
        self, records: Sequence[DecisionRecord], customer_ids: Sequence[str] | None = None
    ) -> list[Appended]:
        """All of ``records`` in one transaction, in order, or none."""
        ...

    async def close_async(self) -> None: ...
