"""Issue 21: ``nextbest simulate`` closes the loop through the real parts: the bank's history
streamed and trained on, each simulated day's contacts decided by the decision service (logged,
with their control groups), seen contacts reported back as feedback, and the customers'
applications, complaints and opt-outs coming back through the stream. A small bank (CI); the
full size is a benchmark (bench/simulate.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from consent.stores.tables import contact_history, outcome_events
from service.bootstrap import Container
from service.entrypoints.cli import main
from service.entrypoints.cli.simulate import TARGETING
from service.usecases.decision_consent import may_profile, may_read_features
from service.usecases.simulation import Plan, Simulation
from service.usecases.simulation_policies import POLICIES, seen_in_bulk
from service.usecases.simulation_truth import coverage
from tests.conftest import make_settings

NO_FLOOR = {"model_min_roc_auc": "0", "model_min_top_decile_lift": "0"}
PLAN = Plan(
    customers=800,
    days=3,
    history_days=120,
    seed=3,
    policy="propensity",
    contacts_per_day=20,
    retrain_every_days=2,
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Container, Simulation]]:
    home = tmp_path_factory.mktemp("simulation")
    container = Container(make_settings(home / "home", **NO_FLOOR))
    simulation = Simulation(container, PLAN, home / "bank")
    simulation.set_up()
    simulation.run()
    yield container, simulation
    container.close()


def test_every_day_is_reported_from_what_the_world_drew(simulated) -> None:
    _container, simulation = simulated
    assert [d.day for d in simulation.days] == [
        (simulation.start.date() + timedelta(days=i)).isoformat() for i in range(PLAN.days)
    ]
    drawn = sum(len(days) for w in simulation.worlds for days in w.applied.values())
    without = sum(len(days) for w in simulation.worlds for days in w.applied_without.values())
    assert sum(d.conversions for d in simulation.days) == drawn
    assert sum(d.conversions_without_contact for d in simulation.days) == without
    summary = simulation.summary()
    assert summary["totals"]["contacts"] == len(simulation.deliveries)
    assert summary["totals"]["incremental"] == sum(d.incremental for d in simulation.days)


def test_contacts_are_decided_logged_and_answered(simulated) -> None:
    container, simulation = simulated
    decided = [
        e["record"]
        for e in container.audit.export()
        if e["record"].get("trigger", {}).get("kind") == "simulation"
    ]
    assert len(decided) == sum(d.decisions for d in simulation.days) > 0
    assert all(r["control"] is not None for r in decided)
    delivered = {d.decision_id for d in simulation.deliveries}
    assert delivered, "the propensity policy contacts someone in three days"
    assert delivered <= {r["decision_id"] for r in decided if r["delivered"]}
    with container.engine.connect() as connection:
        impressions = connection.execute(
            select(func.count()).where(
                contact_history.c.kind == "impression",
                contact_history.c.recorded_by == "simulation",
            )
        ).scalar_one()
        outcomes = connection.execute(select(func.count()).select_from(outcome_events)).scalar_one()
    assert impressions == sum(d.seen for d in simulation.days)
    # The simulated days' applications, complaints and opt-outs came back through the stream
    # (the history was seeded, not streamed).
    caused = sum(d.complaints + d.opt_outs for d in simulation.days)
    assert outcomes >= caused and outcomes > 0


def test_the_models_retrain_on_what_the_loop_logged(simulated) -> None:
    """On day 2 the retraining job ran on the logged outcomes and offline features, judged a
    challenger per need, and the loop went on with whatever it promoted."""
    _container, simulation = simulated
    (retrained,) = simulation.retrainings
    assert retrained["day"] == (simulation.start.date() + timedelta(days=2)).isoformat()
    assert retrained["verdicts"] and all(
        isinstance(v["promoted"], bool) and v["reason"] for v in retrained["verdicts"].values()
    )
    assert simulation.summary()["retrainings"] == [retrained]


def test_the_lift_is_held_to_the_worlds_truth(simulated) -> None:
    """Every action delivered with a closed window has its truth from the world; an action
    the report measures carries its interval (a small bank measures none: too few controls)."""
    _container, simulation = simulated
    held = coverage(simulation)
    assert held.report.decisions == sum(d.decisions for d in simulation.days)
    delivered = {d.action_id for d in simulation.deliveries}
    assert {a.action_id for a in held.actions} >= delivered
    for a in held.actions:
        assert a.low <= a.incremental <= a.high
        assert abs(a.truth) <= a.treated
    assert held.as_dict()["required"] == 0.9


def test_the_cli_knows_the_policies_and_starts_only_from_nothing(tmp_path: Path) -> None:
    assert TARGETING == POLICIES
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = CliRunner().invoke(main, ["simulate", "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "is not empty" in result.output


def test_the_policy_ranks_on_each_customers_own_read_and_scores(simulated) -> None:
    """The propensity policy reads and scores a slot's opportunities in bulk: for each, the
    gate's read, the features and the scores a decision for her alone reads and computes
    (profiled or not, features allowed or not)."""
    container, simulation = simulated
    at = simulation.now
    customers = [c for w in simulation.worlds for c in w.ids][:300]
    channels = ("mobile_app", "rm", "email")
    pool = [(c, channels[i % 3]) for i, c in enumerate(customers)] + [(customers[0], "web")]
    decisions = container.decisions
    bulk = seen_in_bulk(container, pool, at)
    profiled = 0
    for (customer_id, channel), seen in zip(pool, bulk, strict=True):
        assert seen is not None
        read = decisions.read_gate(customer_id, at)
        assert seen.read == read
        online = container.features.read(customer_id) if may_read_features(read, channel) else None
        alone = decisions.score(online, at, may_profile(read.consents))
        assert seen.scored.online == alone.online
        assert (seen.scored.profiled, seen.scored.stale) == (alone.profiled, alone.stale)
        assert seen.scored.scores == alone.scores, customer_id
        profiled += bool(alone.scores)
    assert 0 < profiled < len(pool)  # some scored, some not allowed to be
