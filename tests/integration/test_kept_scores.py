"""Scores kept ready, on both online stores (SQLite, real Redis): kept for profiled customers
only, read with the features in the decision's one read, used when they are what scoring now
would give (no model runs, same scores and reasons as scoring in process), and not used when
the features, the profile or the served model versions have moved on since; a withdrawal of
profiling consent drops them; a promotion rescores the worker's customers in the background."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from consent.rules.vocabulary import NEEDS
from consent.stores.customers import KnownCustomer
from feature_repo.activity import FEATURE_NAMES
from feature_repo.profile import profile_rows
from feature_repo.store import StoreLocation, open_store
from service.adapters.features.feast_features import FeastFeatures
from service.adapters.timers import SQLiteTimerIndex, TimerChange
from service.usecases.decision_messages import DecideForCustomer, DecisionMade
from service.usecases.decisions import DecisionService
from service.usecases.ports import FixedModels
from service.usecases.score_keeping import Rescoring, ScoreKeeper, forget_withdrawn
from tests.doubles import GOOD_STANDING, RowByRow, choose, decision_service, grant_all
from training.bank.in_memory import generate
from training.bank.spec import BankSpec

WEIGHTS = {"property_views_7d": 0.4, "logins_30d": 0.05, "age": -0.01}


@dataclass(frozen=True)
class Weighted(RowByRow):
    """A logistic model on three features, counting every score and explanation it computes."""

    need: str
    version: str = "1"
    name: str = "weighted"
    run_id: str = "none"
    depends_on: frozenset[str] = frozenset()
    features: tuple[str, ...] = tuple(WEIGHTS)
    calls: list[str] = field(default_factory=list)

    def row(self, values: Mapping[str, float | None]) -> np.ndarray:
        return np.array([values.get(f) or 0.0 for f in self.features])

    def probability(self, row: np.ndarray) -> float:
        self.calls.append("score")
        return 1 / (1 + math.exp(-(float(row @ np.array(list(WEIGHTS.values()))) - 1.0)))

    def contributions(self, row: np.ndarray) -> list[tuple[str, float]]:
        self.calls.append("explain")
        pairs = zip(self.features, row * np.array(list(WEIGHTS.values())), strict=True)
        return sorted(((f, float(c)) for f, c in pairs), key=lambda x: -x[1])


@pytest.fixture(params=["sqlite", "redis"])
def kept(request, embedded, tmp_path) -> Iterator[tuple[DecisionService, ScoreKeeper]]:
    project = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        where = StoreLocation(tmp_path, project, "redis", request.getfixturevalue("redis_url"))
    else:
        where = StoreLocation(tmp_path, project)
    features = FeastFeatures(open_store(where), where)
    service = decision_service(embedded.engine, features)  # type: ignore[arg-type]
    service.models = FixedModels({need: Weighted(need) for need in NEEDS})
    keeper = ScoreKeeper(
        service.models,
        features.read,
        features.online,
        service.registry,
        service.catalog,
        lambda: datetime.now(UTC),
    )
    bank = generate(BankSpec(seed=8, customers=30, days=5))
    customers = bank.customers.head(3).assign(customer_id=["K1", "K2", "K3"], age=40)
    features.write_profiles(profile_rows(customers, datetime.now(UTC) - timedelta(days=1)))
    for customer in ("K1", "K2", "K3"):
        service.directory.upsert([KnownCustomer(customer, None, None, GOOD_STANDING)])
        grant_all(service.registry, customer, "mobile_app")
    _activity(features, {"K1": 6, "K2": 6, "K3": 1})
    yield service, keeper
    features.online.erase("K1")
    features.online.erase("K2")
    features.online.erase("K3")


def _activity(features: FeastFeatures, views: dict[str, float]) -> None:
    rows = pd.DataFrame(
        [
            {
                "customer_id": customer,
                "event_timestamp": datetime.now(UTC) - timedelta(minutes=1),
                **dict.fromkeys(FEATURE_NAMES, 0.0),
                "property_views_7d": count,
                "logins_30d": 12.0,
                "salary_change_ratio": 1.0,
            }
            for customer, count in views.items()
        ]
    )
    features.write(rows)


def _calls(service: DecisionService) -> int:
    return sum(len(m.calls) for m in service.models.snapshot().values())  # type: ignore[attr-defined,misc]


def _decide(service: DecisionService, customer: str) -> tuple[DecisionMade, int]:
    before = _calls(service)
    made = service.decide(DecideForCustomer(customer, "mobile_app"))
    return made, _calls(service) - before


def _outcome(made: DecisionMade) -> tuple[object, ...]:
    record = made.record
    scores = {c.action_id: c.score for c in record.candidates}
    reasons = {
        need: [(r.feature, round(r.contribution, 9)) for r in rs]
        for need, rs in made.reasons.items()
    }
    return record.delivered, scores, reasons, [m.version for m in record.models]


def test_a_decision_uses_the_scores_kept_and_computes_nothing(kept) -> None:
    service, keeper = kept
    read = keeper.keep(["K1", "K3"])
    assert set(read) == {"K1", "K3"} and read["K1"].scores is not None
    assert service.features.read("K1").scores == read["K1"].scores  # stored as kept

    with_kept, computed = _decide(service, "K1")
    assert computed == 0  # no score, no explanation: all of it was kept
    assert "mortgage_consultation" in with_kept.record.delivered
    assert with_kept.reasons["mortgage"][0].feature == "property_views_7d"

    # K2 has K1's features and no scores kept: the same decision, scored in process.
    in_process, computed = _decide(service, "K2")
    assert computed > 0
    assert _outcome(with_kept) == _outcome(in_process)


def test_scores_are_not_used_once_features_profile_or_models_move_on(kept) -> None:
    service, keeper = kept
    keeper.keep(["K1", "K2", "K3"])
    assert _decide(service, "K3")[1] == 0

    _activity(service.features, {"K1": 9})  # a new activity row: the kept scores are older
    made, computed = _decide(service, "K1")
    assert computed > 0
    mortgage = next(c for c in made.record.candidates if c.action_id == "mortgage_consultation")
    assert mortgage.score == pytest.approx(
        1 / (1 + math.exp(-(0.4 * 9 + 0.05 * 12 - 0.01 * 40 - 1))), abs=0.05
    )

    # A promotion: the served versions differ from the kept ones.
    service.models = FixedModels({need: Weighted(need, version="2") for need in NEEDS})
    made, computed = _decide(service, "K2")
    assert computed > 0 and {m.version for m in made.record.models} == {"2"}


def test_only_profiled_customers_are_kept_and_a_withdrawal_drops_them(kept) -> None:
    service, keeper = kept
    choose(service.registry, "K2", "profiling", "any", False)
    assert set(keeper.keep(["K1", "K2"])) == {"K1"}
    assert service.features.read("K2").scores is None

    entries = choose(service.registry, "K1", "profiling", "any", False)
    forget_withdrawn(service.features.online, entries)
    assert service.features.read("K1").scores is None


def test_a_promotion_rescores_the_workers_customers_in_the_background(kept, tmp_path) -> None:
    service, keeper = kept
    keeper.keep(["K1", "K2", "K3"])
    index = SQLiteTimerIndex(tmp_path / "timers.db")
    index.apply([TimerChange(0, c, 1) for c in ("K1", "K2")] + [TimerChange(1, "K3", 1)])
    rescoring = Rescoring(lambda: keeper, index.customers, lambda: [0, 1], page=1)
    assert rescoring.round() == 0 and not rescoring.pending  # the versions it started with

    promoted = FixedModels({need: Weighted(need, version="2") for need in NEEDS})
    service.models = keeper.models = promoted
    assert _decide(service, "K1")[1] > 0  # kept by version 1: scored in process meanwhile
    pages: list[int] = []
    while rescoring.pending or not pages:
        pages.append(rescoring.round())
    assert sum(pages) == rescoring.rescored == 3 and max(pages) == 1  # a page of one per round
    for customer in ("K1", "K2", "K3"):
        made, computed = _decide(service, customer)
        assert computed == 0 and {m.version for m in made.record.models} == {"2"}
    assert rescoring.round() == 0  # nothing changed since
