"""Test doubles for what is not under test: a model that scores every need high, a feature
reader that knows every customer and a clock that moves only when told. The gate, the stores and
the audit log stay real."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from sqlalchemy import Engine

from consent.rules.catalog import Catalog
from consent.rules.model import ConsentGiven, CustomerFacts
from consent.rules.policy import Policy
from consent.rules.vocabulary import NEEDS, ConsentChannel, ContactChannel, Purpose
from consent.stores.audit.log import AuditLog
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory, KnownCustomer
from consent.stores.registry import ConsentRegistry
from feature_repo.activity import FEATURE_NAMES
from feature_repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW, SCORING_FEATURES
from service.adapters.features.online_features import OnlineFeatures
from service.bootstrap import Container
from service.usecases.alert_model import Alert, AlertReason
from service.usecases.decisions import DecisionService
from service.usecases.ports import FixedModels


class Clock:
    """Monotonic seconds that move only when the test says so (``now``)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class SyncFeatures:
    """A feature double without an asynchronous form, as the embedded online store."""

    asynchronous = False

    def read(self, customer_id: str) -> OnlineFeatures:
        raise NotImplementedError

    async def read_async(self, customer_id: str) -> OnlineFeatures:
        return self.read(customer_id)

    async def close_async(self) -> None:
        """Nothing was opened on an event loop."""


class EveryoneEngaged(SyncFeatures):
    """Features for any customer: known, nothing in flight, as of ``age`` ago (a minute);
    with ``valid_for``, the row says it holds that long after its time (None: it does not say,
    as rows before timers), and ``behind`` puts the stream's watermark that far behind now."""

    def __init__(
        self,
        age: timedelta = timedelta(minutes=1),
        valid_for: timedelta | None = None,
        behind: timedelta | None = None,
    ) -> None:
        self.age = age
        self.valid_for = valid_for
        self.behind = behind

    def read(self, customer_id: str) -> OnlineFeatures:
        activity = datetime.now(UTC) - self.age
        views: dict[str, datetime | None] = {
            ACTIVITY_VIEW: activity,
            PROFILE_VIEW: datetime.now(UTC) - timedelta(days=400),
        }
        valid = None
        if self.valid_for == timedelta.max:  # holds until her next event
            valid = float("inf")
        elif self.valid_for is not None:
            valid = (activity + self.valid_for).timestamp()
        watermark = None if self.behind is None else datetime.now(UTC) - self.behind
        values: dict[str, float | None] = dict.fromkeys(SCORING_FEATURES, 0.0)
        return OnlineFeatures(customer_id, values, activity, views, valid, watermark)


class RowByRow:
    """A double's batch scoring (``Scorer.probabilities``, ``probability_each``,
    ``contributions_of``) one row at a time, through its own ``probability`` and
    ``contributions``."""

    features: tuple[str, ...]

    #: A double has no artifact files to digest.
    digest: str = "sha256:" + "0" * 64

    def probability(self, row: np.ndarray) -> float:
        raise NotImplementedError

    def contributions(self, row: np.ndarray) -> list[tuple[str, float]]:
        raise NotImplementedError

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        return np.array([self.probability(row) for row in rows], np.float64)

    def probability_each(self, rows: np.ndarray) -> list[float]:
        return [self.probability(row) for row in rows]

    def contributions_of(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(self.features)))
        for i, row in enumerate(rows):
            for name, contribution in self.contributions(row):
                out[i, self.features.index(name)] = contribution
        return out


@dataclass(frozen=True)
class ConfidentModel(RowByRow):
    """A model that scores every need high: the gate, not the model, is under test."""

    need: str
    name: str = "fixed"
    version: str = "1"
    run_id: str = "none"
    depends_on: frozenset[str] = frozenset({"property_views_7d", "age"})
    features: tuple[str, ...] = ("loan_views_7d",)

    def row(self, values: Mapping[str, float | None]) -> np.ndarray:
        return np.array([values.get("loan_views_7d") or 0.0])

    def probability(self, row: np.ndarray) -> float:
        return 0.9

    def contributions(self, row: np.ndarray) -> list[tuple[str, float]]:
        return [("loan_views_7d", 0.5)]


GOOD_STANDING = CustomerFacts(
    age=40,
    income=90_000,
    timezone="UTC",
    kyc_status="complete",
    debt_to_income=0.1,
    risk_level=5,
    risk_assessed_at=datetime.now(UTC),
)


def decision_service(engine: Engine, features: EveryoneEngaged | None = None) -> DecisionService:
    """The real gate, stores and audit log on ``engine``, with the doubles above for features
    and models."""
    return DecisionService(
        ConsentRegistry(engine),
        CustomerDirectory(engine),
        ContactHistory(engine),
        features or EveryoneEngaged(),
        FixedModels({need: ConfidentModel(need) for need in NEEDS}),
        Catalog.load(),
        Policy.load(),
        AuditLog(engine),
    )


def grant_all(registry: ConsentRegistry, customer_id: str, channel: ContactChannel) -> None:
    """Marketing, service (on ``channel``) and profiling consent, granted now."""
    grants: tuple[tuple[Purpose, ConsentChannel], ...] = (
        ("marketing", channel),
        ("service", channel),
        ("profiling", "any"),
    )
    registry.record(
        ConsentGiven(
            customer_id=customer_id,
            purpose=purpose,
            channel=on,
            granted=True,
            recorded_at=datetime.now(UTC),
            source="test",
            notice_version="v1",
        )
        for purpose, on in grants
    )


def choose(
    registry: ConsentRegistry,
    customer_id: str,
    purpose: Purpose,
    channel: ContactChannel | Literal["any"],
    granted: bool,
) -> list[ConsentGiven]:
    """One consent choice (granted or withdrawn), recorded now; the entry recorded."""
    entries = [
        ConsentGiven(
            customer_id=customer_id,
            purpose=purpose,
            channel=channel,
            granted=granted,
            recorded_at=datetime.now(UTC),
            source="test",
            notice_version="v1",
        )
    ]
    registry.record(entries)
    return entries


def sample_alert(customer_id: str, rm_id: str, alert_id: str | None = None) -> Alert:
    """A queued mortgage alert as the alerter makes them (``AlertStore.add`` opens it)."""
    now = datetime.now(UTC)
    return Alert(
        alert_id=alert_id or f"alert-{customer_id}",
        decision_id=f"decision-{customer_id}",
        customer_id=customer_id,
        household_id=None,
        rm_id=rm_id,
        topic="mortgage",
        need="mortgage",
        action_id="mortgage_consultation",
        title="Book a mortgage consultation",
        kind="sales",
        score=0.71,
        priority=85.2,
        status="queued",
        created_at=now,
        opened_at=None,
        expires_at=now + timedelta(days=3),
        reasons=(
            AlertReason(
                feature="largest_inflow_7d",
                value=600000.0,
                text="largest single credit, last 7 days: 600,000",
            ),
        ),
        talking_points=(
            "Mortgage interest 0.71",
            "largest single credit, last 7 days: 600,000",
            "Suggested: book a mortgage consultation",
        ),
    )


def servable(container: Container, customers: list[str], channel: ContactChannel) -> None:
    """``customers`` in good standing, consenting on ``channel``, with an online row written
    now (all features zero): every decision for them reads and scores."""
    container.directory.upsert(KnownCustomer(c, None, None, GOOD_STANDING) for c in customers)
    for customer in customers:
        grant_all(container.registry, customer, channel)
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    container.features.online.write(
        customers,
        np.full(len(customers), now_us),
        np.zeros((len(customers), len(FEATURE_NAMES))),
    )
