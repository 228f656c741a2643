"""The lift report: its interval covers the true difference as often as it says, outcomes are
attributed to the first decision within the action's window, open windows wait, and harm is
counted per contact and per group."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from consent.rules.catalog import Catalog
from service.usecases.lift import Decided, Happened, LiftReport, report
from service.usecases.lift_stats import Arm, lift

CATALOG = Catalog.load()
T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
MORTGAGE = "mortgage_consultation"
LOAN = "personal_loan_offer"


def test_the_interval_covers_the_true_difference_as_often_as_it_says() -> None:
    rng = random.Random(7)
    covered, runs = 0, 400
    for _ in range(runs):
        base, effect = rng.uniform(0.01, 0.1), rng.uniform(0.0, 0.05)
        n_treated, n_control = rng.randint(500, 3000), rng.randint(60, 400)
        treated = sum(rng.random() < base + effect for _ in range(n_treated))
        control = sum(rng.random() < base for _ in range(n_control))
        measured = lift(Arm(n_treated, treated), Arm(n_control, control), confidence=0.9)
        covered += measured.low <= effect <= measured.high
    # 90% nominal; 400 runs give a standard error of 1.5 points.
    assert 0.86 <= covered / runs <= 0.95


def test_no_customers_means_no_knowledge() -> None:
    measured = lift(Arm(0, 0), Arm(10, 1))
    assert (measured.low, measured.high) == (-1.0, 1.0)
    assert not measured.measured


def decided(ref: str, days: float, group: str = "treatment", **actions: str) -> Decided:
    return Decided(ref, T0 + timedelta(days=days), "rm", group, actions)


def happened(
    ref: str, days: float, kind: str = "application", need: str | None = "mortgage"
) -> Happened:
    return Happened(ref, T0 + timedelta(days=days), kind, need)


def run(decisions: list[Decided], outcomes: list[Happened], **kwargs: Any) -> LiftReport:
    kwargs.setdefault("observed_until", T0 + timedelta(days=200))
    return report(
        decisions,
        outcomes,
        kwargs.pop("declines", 0),
        CATALOG,
        since=T0,
        until=T0 + timedelta(days=100),
        **kwargs,
    )


def test_an_outcome_counts_for_the_first_decision_within_the_action_s_window() -> None:
    window = CATALOG.actions[MORTGAGE].attribution_days
    decisions = [
        decided("a", 0, **{MORTGAGE: "treatment"}),
        decided("a", 5, **{MORTGAGE: "treatment"}),  # not a second exposure
        decided("b", 0, **{MORTGAGE: "treatment"}),
        decided("c", 0, **{MORTGAGE: "held_out"}),
        decided("d", 0, group="control", **{MORTGAGE: "universal_control"}),
    ]
    outcomes = [
        happened("a", window - 1),  # in a's window
        happened("b", window + 1),  # too late
        happened("c", 1, need="personal_loan"),  # another need
        happened("d", 2, kind="product_opened"),
    ]
    [mortgage] = run(decisions, outcomes).actions
    assert (mortgage.lift.treated.customers, mortgage.lift.treated.converted) == (2, 1)
    assert (mortgage.lift.control.customers, mortgage.lift.control.converted) == (2, 1)
    assert mortgage.by_channel.keys() == {"rm"}
    assert mortgage.lift.incremental == 2 * (0.5 - 0.5)


def test_a_window_still_open_waits() -> None:
    window = CATALOG.actions[MORTGAGE].attribution_days
    decisions = [
        decided("a", 0, **{MORTGAGE: "treatment"}),
        decided("b", 10, **{MORTGAGE: "held_out"}),
    ]
    observed = T0 + timedelta(days=window + 5)
    [mortgage] = run(decisions, [], observed_until=observed).actions
    assert mortgage.lift.treated.customers == 1
    assert mortgage.lift.control.customers == 0
    assert mortgage.open_windows == 1


def test_decisions_outside_the_period_and_other_actions_are_left_out() -> None:
    decisions = [
        decided("a", -1, **{MORTGAGE: "treatment"}),
        decided("b", 101, **{MORTGAGE: "treatment"}),
        decided("c", 1, **{LOAN: "treatment"}),
    ]
    result = run(decisions, [], action=MORTGAGE)
    assert result.decisions == 1
    assert result.actions == []
    assert result.contacts == 1


def test_harm_counts_per_contact_and_per_group() -> None:
    decisions = [
        decided("a", 0, **{MORTGAGE: "treatment"}),
        decided("a", 1, **{LOAN: "treatment"}),
        decided("b", 0, group="control", **{MORTGAGE: "universal_control"}),
    ]
    outcomes = [
        happened("a", 2, kind="complaint", need=None),  # within 7 days of a contact
        happened("a", 20, kind="opt_out", need=None),  # not within 7 days of one
        happened("b", 3, kind="complaint", need=None),
    ]
    result = run(decisions, outcomes, declines=1, harm_days=7)
    assert result.contacts == 2
    assert result.per_1000_contacts == {"declines": 500.0, "complaint": 500.0, "opt_out": 0.0}
    assert result.harm_by_group == {
        "treatment": {"complaint": 1000.0, "opt_out": 1000.0},
        "control": {"complaint": 1000.0, "opt_out": 0.0},
    }
    assert (result.programme.treated.customers, result.programme.control.customers) == (1, 1)
