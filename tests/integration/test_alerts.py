"""RM alerts on the embedded store: crossings and triggers, the discipline (dedup, household,
capacity, expiry), the gate with channel rm, dispositions. Features and models are doubles
whose values the test sets; the gate, the stores and the audit log are real."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from consent.rules.catalog import Catalog
from consent.rules.documents import PolicyError
from consent.rules.model import ConsentGiven
from consent.rules.vocabulary import NEEDS, ConsentChannel, Purpose
from consent.stores.customers import CustomerDirectory, KnownCustomer
from consent.stores.tables import contact_history
from feature_repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW, SCORING_FEATURES
from service.adapters.alert_store import AlertStore
from service.adapters.features.online_features import OnlineFeatures
from service.bootstrap import Container
from service.entrypoints.cli import main
from service.errors import Conflict
from service.usecases.alert_inbox import AlertInbox
from service.usecases.alert_policy import AlertPolicy
from service.usecases.alert_runner import AlertRunner
from service.usecases.alerter import Alerter
from service.usecases.origin import Origin, TimerOrigin
from service.usecases.ports import FixedModels
from service.usecases.regate import AlertGate
from tests.doubles import GOOD_STANDING, RowByRow, SyncFeatures, decision_service


class Scripted(SyncFeatures):
    """Online features the test sets per customer (zeros otherwise), a minute old."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}

    def set(self, customer_id: str, **values: float) -> None:
        self.values.setdefault(customer_id, {}).update(values)

    def read(self, customer_id: str) -> OnlineFeatures:
        at = datetime.now(UTC) - timedelta(minutes=1)
        values: dict[str, float | None] = dict.fromkeys(SCORING_FEATURES, 0.0)
        values["salary_change_ratio"] = 1.0  # a steady salary (0 would be a drop)
        values.update(self.values.get(customer_id, {}))
        views: dict[str, datetime | None] = {ACTIVITY_VIEW: at, PROFILE_VIEW: at}
        return OnlineFeatures(customer_id, values, at, views)


@dataclass(frozen=True)
class ViewsModel(RowByRow):
    """Scores a need by its page views: a tenth per mortgage-calculator view (mortgage only)."""

    need: str
    name: str = "views"
    version: str = "1"
    run_id: str = "none"
    depends_on: frozenset[str] = frozenset()
    features: tuple[str, ...] = ("mortgage_calculator_views_7d",)

    def row(self, values: Mapping[str, float | None]) -> np.ndarray:
        return np.array([values.get("mortgage_calculator_views_7d") or 0.0])

    def probability(self, row: np.ndarray) -> float:
        return min(1.0, float(row[0]) / 10) if self.need == "mortgage" else 0.0

    def contributions(self, row: np.ndarray) -> list[tuple[str, float]]:
        return [("mortgage_calculator_views_7d", 0.8)]


def _consent(
    container: Container, customer_id: str, *pairs: tuple[Purpose, ConsentChannel]
) -> None:
    container.registry.record(
        ConsentGiven(
            customer_id=customer_id,
            purpose=purpose,
            channel=channel,
            granted=True,
            recorded_at=datetime.now(UTC) - timedelta(seconds=1),
            source="test",
            notice_version="v1",
        )
        for purpose, channel in pairs
    )


EVERYTHING: tuple[tuple[Purpose, ConsentChannel], ...] = (
    ("marketing", "rm"),
    ("service", "rm"),
    ("profiling", "any"),
)


@pytest.fixture
def setup(embedded: Container) -> tuple[Alerter, Scripted, Container]:
    features = Scripted()
    decisions = decision_service(embedded.engine, features)  # type: ignore[arg-type]
    decisions.models = FixedModels({need: ViewsModel(need) for need in NEEDS})
    policy = AlertPolicy.load(decisions.catalog).model_copy(update={"rm_daily_capacity": 2})
    alerter = Alerter(
        decisions,
        AlertStore(embedded.engine),
        policy,
        decisions.catalog,
        embedded.alert_memory(),
    )
    return alerter, features, embedded


@pytest.fixture
def inbox(setup: tuple[Alerter, Scripted, Container]) -> AlertInbox:
    """The RM's side of ``setup``'s alerts: the same store, policy and feed."""
    alerter, _features, _container = setup
    decisions = alerter.decisions
    gate = AlertGate(
        decisions.reads,
        decisions.policy,
        decisions.catalog,
        decisions.audit,
        alerter.policy.regate_rules,
    )
    return AlertInbox(alerter.store, gate, decisions.contacts, alerter.policy, alerter.feed)


def _customer(container: Container, cid: str, household: str | None = None, rm: str | None = "RM1"):
    CustomerDirectory(container.engine).upsert([KnownCustomer(cid, household, rm, GOOD_STANDING)])


def _origin(n: int = 1) -> Origin:
    return Origin(f"evt-{n}", "nextbest.events.v1", 0, n)


def test_a_crossing_raises_one_alert_with_reasons_after_the_gate(setup) -> None:
    alerter, features, container = setup
    _customer(container, "C1")
    _consent(container, "C1", *EVERYTHING)
    features.set("C1", mortgage_calculator_views_7d=1)
    assert alerter.process({"C1": _origin(1)}) == []  # 0.1: below the threshold (0.30)

    features.set("C1", mortgage_calculator_views_7d=5)
    [alert] = alerter.process({"C1": _origin(2)})
    assert (alert.need, alert.action_id, alert.rm_id, alert.status) == (
        "mortgage",
        "mortgage_consultation",
        "RM1",
        "open",
    )
    assert alert.score == pytest.approx(0.5)
    assert "mortgage calculator" in alert.reasons[0].text
    assert alert.talking_points[0] == "Mortgage interest 0.50"
    assert alert.talking_points[-1] == "Suggested: book a mortgage consultation"
    # The decision was logged first, with the event that caused it and only that action.
    entry = container.audit.get(alert.decision_id)
    assert entry is not None
    record = entry["record"]
    assert record["trigger"]["kind"] == "stream_trigger"
    assert record["trigger"]["event"]["event_id"] == "evt-2"
    assert [c["action_id"] for c in record["candidates"]] == ["mortgage_consultation"]

    # Still above: no crossing, nothing new.
    features.set("C1", mortgage_calculator_views_7d=6)
    assert alerter.process({"C1": _origin(3)}) == []


def test_an_open_alert_stops_a_second_one_for_the_same_need(setup) -> None:
    alerter, features, container = setup
    _customer(container, "C1")
    _consent(container, "C1", *EVERYTHING)
    features.set("C1", mortgage_calculator_views_7d=5)
    assert len(alerter.process({"C1": None})) == 1
    features.set("C1", mortgage_calculator_views_7d=0)
    alerter.process({"C1": None})
    features.set("C1", mortgage_calculator_views_7d=5)  # crosses again
    gated = alerter.stats.gated
    assert alerter.process({"C1": None}) == []
    assert alerter.stats.skipped["open_alert"] == 1
    assert alerter.stats.gated == gated  # no decision was made for it


def test_a_household_shares_its_sales_alerts_but_not_service_ones(setup) -> None:
    alerter, features, container = setup
    for cid in ("A", "B"):
        _customer(container, cid, household="H1")
        _consent(container, cid, *EVERYTHING)
    features.set("A", mortgage_calculator_views_7d=5)
    assert [a.need for a in alerter.process({"A": None})] == ["mortgage"]
    features.set("B", mortgage_calculator_views_7d=5, card_spend_7d=6000)
    [alert] = alerter.process({"B": None})
    assert alert.action_id == "card_activity_check"  # the household's mortgage alert stands
    assert alerter.stats.skipped["household_alert"] == 1
    assert alert.triggers == ("unusual_card_activity",)
    assert "Unusual card activity" in alert.talking_points


def test_without_rm_marketing_consent_no_alert_and_the_log_says_why(setup) -> None:
    alerter, features, container = setup
    _customer(container, "C2")
    _consent(container, "C2", ("profiling", "any"), ("marketing", "mobile_app"))
    features.set("C2", mortgage_calculator_views_7d=5)
    assert alerter.process({"C2": _origin(7)}) == []
    assert alerter.stats.suppressed_by_gate == 1
    [entry] = container.audit.export()
    record = entry["record"]
    assert record["channel"] == "rm"
    assert record["delivery_status"] == "nothing_to_deliver"
    assert record["reason_codes"] == ["NO_CONSENT_FOR_PURPOSE_AND_CHANNEL"]


def test_capacity_opens_the_highest_priorities_first_then_queues(setup, inbox) -> None:
    alerter, features, container = setup
    for cid, views in (("C1", 4), ("C2", 9), ("C3", 6)):
        _customer(container, cid)
        _consent(container, cid, *EVERYTHING)
        features.set(cid, mortgage_calculator_views_7d=views)
    stored = alerter.process({"C1": None, "C2": None, "C3": None})
    status = {a.customer_id: a.status for a in stored}
    assert status == {"C2": "open", "C3": "open", "C1": "queued"}
    # Capacity is per day: tomorrow the queued one opens; past its expiry it is expired.
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    inbox.clock = lambda: tomorrow
    [opened] = inbox.sweep()
    assert (opened.customer_id, opened.status) == ("C1", "open")
    later = datetime.now(UTC) + timedelta(hours=alerter.policy.expire_hours + 1)
    inbox.clock = lambda: later
    assert {a.status for a in inbox.sweep()} == {"expired"}
    assert alerter.store.find("RM1", "open") == []


def test_a_disposition_closes_the_alert_feeds_contacts_and_labels(setup, inbox) -> None:
    alerter, features, container = setup
    _customer(container, "C1", household="H9")
    _consent(container, "C1", *EVERYTHING)
    features.set("C1", mortgage_calculator_views_7d=5)
    [alert] = alerter.process({"C1": None})
    done = inbox.dispose(alert.alert_id, "not_interested", "rm-key", "not now")
    assert (done.status, done.disposition, done.disposed_by) == (
        "closed",
        "not_interested",
        "rm-key",
    )
    with container.engine.connect() as connection:
        rows = connection.execute(select(contact_history)).all()
    assert [(r.kind, r.channel, r.need, r.household_id) for r in rows] == [
        ("decline", "rm", "mortgage", "H9")
    ]
    [label] = alerter.store.labels()
    assert (label["customer_id"], label["need"], label["label"]) == ("C1", "mortgage", 0)
    with pytest.raises(Conflict):
        inbox.dispose(alert.alert_id, "converted", "rm-key")
    # The labels as training reads them.
    out = container.settings.home / "labels.parquet"
    env = {"NEXTBEST_HOME": str(container.settings.home)}
    result = CliRunner().invoke(main, ["alerts", "labels", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    assert written[["customer_id", "need", "label", "outcome"]].values.tolist() == [
        ["C1", "mortgage", 0, "not_interested"]
    ]


def test_a_burst_of_events_is_one_rescoring(setup, inbox) -> None:
    alerter, _features, _container = setup
    runner = AlertRunner(alerter, inbox, alerter.policy.debounce_seconds)
    for n in range(5):
        runner.touched({"C1": _origin(n)})
    assert runner.due(now=0.0) == {}  # still within the debounce
    ready = runner.due(now=float("inf"))
    assert list(ready) == ["C1"] and ready["C1"] == _origin(4)
    assert runner.due(now=float("inf")) == {}


def test_an_event_is_not_kept_waiting_behind_a_midnight_of_timers(setup, inbox) -> None:
    alerter, _features, _container = setup
    runner = AlertRunner(alerter, inbox, alerter.policy.debounce_seconds, page=100)
    midnight = TimerOrigin(1_700_000_000_000_000)
    runner.touched({f"T{n:04d}": midnight for n in range(1_000)})
    runner.touched({"C1": _origin(1), "T0500": _origin(2)})
    runner.touched({"T0500": midnight})  # a timer after her event: the event stays her origin
    first = runner.due(now=float("inf"))
    assert len(first) == 100
    assert list(first)[:2] == ["T0500", "C1"]  # events first, in the order they came
    assert first["C1"] == _origin(1) and first["T0500"] == _origin(2)
    assert all(isinstance(o, TimerOrigin) for c, o in first.items() if c not in {"C1", "T0500"})
    # The rest, a page at a time, none lost or twice.
    seen = set(first)
    while page := runner.due(now=float("inf")):
        assert len(page) <= 100 and not seen & set(page)
        seen |= set(page)
    assert seen == {f"T{n:04d}" for n in range(1_000)} | {"C1"}
    assert runner.waiting == 0


def test_the_last_scores_outlive_the_alerter_so_a_restart_raises_nothing_again(setup) -> None:
    alerter, features, container = setup
    _customer(container, "C1")
    _consent(container, "C1", *EVERYTHING)
    features.set("C1", mortgage_calculator_views_7d=5)
    assert len(alerter.process({"C1": None})) == 1
    restarted = Alerter(
        alerter.decisions,
        alerter.store,
        alerter.policy,
        alerter.catalog,
        container.alert_memory(),  # a new handle on the same store
    )
    assert restarted.process({"C1": None}) == []
    assert (restarted.stats.rescored, restarted.stats.considered) == (1, 0)


def test_customers_without_an_rm_or_consent_to_look_are_not_rescored(setup) -> None:
    alerter, features, container = setup
    _customer(container, "NORM", rm=None)
    _consent(container, "NORM", *EVERYTHING)
    _customer(container, "SHY")
    _consent(container, "SHY", ("marketing", "rm"))
    for cid in ("NORM", "SHY", "UNKNOWN"):
        features.set(cid, mortgage_calculator_views_7d=9)
    assert alerter.process({"NORM": None, "SHY": None, "UNKNOWN": None}) == []
    assert alerter.stats.rescored == 0
    assert alerter.stats.skipped == {"no_rm": 2, "no_consent_to_look": 1}


def test_an_alert_policy_with_a_threshold_for_an_unknown_need_is_refused(tmp_path) -> None:
    document = yaml.safe_load(resources.files("consent").joinpath("alerts.yaml").read_text())
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(document))
    assert AlertPolicy.load(Catalog.load(), path).thresholds == document["thresholds"]
    document["thresholds"]["astrology"] = 0.3
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(PolicyError, match=r"thresholds: .*unknown needs \['astrology'\]"):
        AlertPolicy.load(Catalog.load(), path)
