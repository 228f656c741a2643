"""What one look at a customer costs the alert path: one feature read and one scoring, and on a
crossing one gate read, the decision the alert carries reusing them. The stores are the real
embedded ones (SQLite operational store, Feast SQLite online store) behind thin counting
wrappers; the models are doubles that count their scorings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from consent.rules.vocabulary import NEEDS
from consent.stores.customers import KnownCustomer
from consent.stores.reads import GateRead, GateReads
from feature_repo.activity import FEATURE_NAMES
from service.adapters.features.online_features import OnlineFeatures
from service.bootstrap import Container
from service.usecases.alerter import Alerter
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.ports import FixedModels, OnlineFeatureReads
from tests.doubles import GOOD_STANDING, SyncFeatures, choose, grant_all
from tests.integration.test_alerts import ViewsModel

RM = "RM7"
VIEWS = "mortgage_calculator_views_7d"


class CountingReads(GateReads):
    """The container's own gate reads, counted per customer."""

    def __init__(self, reads: GateReads) -> None:
        super().__init__(reads.registry, reads.directory, reads.contacts)
        self.inner = reads
        self.customers: Counter[str] = Counter()
        #: What happens just before a customer's read (a consent changing meanwhile).
        self.before_read: dict[str, Callable[[], None]] = {}

    def read(self, customer_id: str, now: datetime, days: int) -> GateRead:
        self.customers[customer_id] += 1
        if customer_id in self.before_read:
            self.before_read[customer_id]()
        return self.inner.read(customer_id, now, days)


class CountingFeatures(SyncFeatures):
    """The container's Feast online reads (on a thread), counted per customer."""

    def __init__(self, features: OnlineFeatureReads) -> None:
        self.inner = features
        self.customers: Counter[str] = Counter()

    def read(self, customer_id: str) -> OnlineFeatures:
        self.customers[customer_id] += 1
        return self.inner.read(customer_id)


@dataclass(frozen=True)
class CountingModel(ViewsModel):
    """``ViewsModel`` (mortgage by calculator views), counting its scorings."""

    scorings: list[float] = field(default_factory=list)

    def probability(self, row: np.ndarray) -> float:
        self.scorings.append(float(row[0]))
        return super().probability(row)


@pytest.fixture
def counted(embedded: Container) -> tuple[Container, CountingReads, CountingFeatures]:
    # Fixed models in the registry's place: a ModelSet's other methods are not used here.
    embedded.models = FixedModels({need: CountingModel(need) for need in NEEDS})  # type: ignore[assignment]
    reads = CountingReads(embedded.gate_reads)
    features = CountingFeatures(embedded.features)
    decisions = embedded.decisions
    decisions.reads = reads
    decisions.features = features
    return embedded, reads, features


def _online(container: Container, views: dict[str, float]) -> None:
    """An online row written now for each customer: zeros, but ``views`` calculator views."""
    customers = list(views)
    matrix = np.zeros((len(customers), len(FEATURE_NAMES)))
    matrix[:, FEATURE_NAMES.index(VIEWS)] = list(views.values())
    matrix[:, FEATURE_NAMES.index("salary_change_ratio")] = 1.0  # a steady salary
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    container.features.online.write(customers, np.full(len(customers), now_us), matrix)


def _known(container: Container, *customers: str) -> None:
    container.directory.upsert(KnownCustomer(c, None, RM, GOOD_STANDING) for c in customers)
    for customer in customers:
        grant_all(container.registry, customer, "rm")


def _scorings(container: Container) -> Counter[str]:
    models: dict[str, CountingModel] = container.models  # type: ignore[assignment]
    return Counter({need: len(model.scorings) for need, model in models.items()})


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A logged decision without what differs between any two: its id, time, features' ages."""
    features = [{k: v for k, v in f.items() if k != "age_seconds"} for f in record["features"]]
    left_out = ("decision_id", "decided_at", "features")
    return {**{k: v for k, v in record.items() if k not in left_out}, "features": features}


def test_a_look_reads_and_scores_each_customer_once_and_the_alert_reuses_them(counted) -> None:
    container, reads, features = counted
    _known(container, "UP", "FLAT")
    _online(container, {"UP": 6, "FLAT": 1})

    [alert] = container.alerter.process({"UP": None, "FLAT": None})

    assert (alert.customer_id, alert.action_id) == ("UP", "mortgage_consultation")
    assert features.customers == {"UP": 1, "FLAT": 1}
    assert _scorings(container) == dict.fromkeys(NEEDS, 2)  # each model, once per customer
    assert reads.customers == {"UP": 1}  # the gate only for the crossing, in its decision
    # The decision carries what the look read and scored.
    entry = container.audit.get(alert.decision_id)
    assert entry is not None
    record = entry["record"]
    [candidate] = record["candidates"]
    assert candidate["score"] == pytest.approx(0.6) == alert.score
    [activity] = [f for f in record["features"] if VIEWS in f["values"]]
    assert activity["values"][VIEWS] == 6
    assert sorted(m["need"] for m in record["models"]) == sorted(NEEDS)

    # The next look: still above the threshold, so nothing crosses and the gate is not asked.
    assert container.alerter.process({"UP": None, "FLAT": None}) == []
    assert features.customers == {"UP": 2, "FLAT": 2}
    assert _scorings(container) == dict.fromkeys(NEEDS, 4)
    assert reads.customers == {"UP": 1}

    # A decision made on its own, reading and scoring again, records what the alert's did.
    own = container.decisions.decide(
        DecideForCustomer(
            customer_id="UP",
            channel="rm",
            limit=container.alert_policy.limit,
            trigger=record["trigger"],
            actions=frozenset(c["action_id"] for c in record["candidates"]),
        )
    )
    own_entry = container.audit.get(own.record.decision_id)
    assert own_entry is not None
    assert _comparable(own_entry["record"]) == _comparable(record)


def test_profiling_withdrawn_between_the_look_and_the_gate_leaves_the_scores_out(
    counted,
) -> None:
    container, reads, features = counted
    _known(container, "UP")
    _online(container, {"UP": 6})
    reads.before_read["UP"] = lambda: choose(container.registry, "UP", "profiling", "any", False)

    assert container.alerter.process({"UP": None}) == []

    assert (reads.customers, features.customers) == ({"UP": 1}, {"UP": 1})
    assert _scorings(container) == dict.fromkeys(NEEDS, 1)
    [entry] = container.audit.export()
    record = entry["record"]
    assert record["models"] == []
    assert [c["score"] for c in record["candidates"]] == [None]
    assert record["delivery_status"] == "nothing_to_deliver"


class RefusingScores:
    """A score store that fails every write (the online store refusing, say)."""

    def write_scores(self, customers: list[str], at_us: np.ndarray, matrix: np.ndarray) -> None:
        raise ConnectionError("the online store refused the write")


def test_scores_that_cannot_be_kept_do_not_stop_the_alerts(counted) -> None:
    container, _reads, _features = counted
    _known(container, "UP")
    _online(container, {"UP": 6})
    alerter = Alerter(
        container.decisions,
        container.alert_store,
        container.alert_policy,
        container.catalog,
        container.alert_memory(),
        scores=RefusingScores(),  # type: ignore[arg-type]
    )

    [alert] = alerter.process({"UP": None})

    assert (alert.customer_id, alert.action_id) == ("UP", "mortgage_consultation")
    assert alerter.stats.skipped["scores_not_kept"] == 1
    assert container.features.read("UP").scores is None  # nothing half-written
