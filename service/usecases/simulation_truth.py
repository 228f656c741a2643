"""The lift report held to the truth only a simulated bank knows.

For each action, the report measures the conversions its delivery caused among the customers it
was delivered to (at their first such decision, with a closed attribution window), from the
control groups. The simulated world knows, for each of those customers, whether she applied for
the action's need within the window with the bank's contacts and whether she would have without
any (the same uniforms drawn against both hazards): the sum of the differences is the true
number of conversions the programme caused among them. The universal control group measures
exactly that contrast (the programme against no sales contact at all); a per-action holdout
measures the action against the rest of the programme, a different number, so the comparison is
made on the universal control group (a plan holds no action out).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from service.usecases.lift import LiftReport
from service.usecases.lift_measure import measure_lift
from service.usecases.simulation_policies import world_of
from training.bank.world import NEED_INDEX, Delivery, World

if TYPE_CHECKING:
    from service.usecases.simulation import Simulation

#: The share of actions with volume whose interval must hold the truth (issue 21).
REQUIRED_COVERAGE = 0.9


@dataclass(frozen=True)
class ActionTruth:
    action_id: str
    treated: int
    control: int
    treated_converted: int
    control_converted: int
    measured: bool
    incremental: float
    low: float
    high: float
    truth: int

    @property
    def covered(self) -> bool:
        return self.low <= self.truth <= self.high


@dataclass(frozen=True)
class Coverage:
    report: LiftReport
    actions: list[ActionTruth]

    @property
    def with_volume(self) -> list[ActionTruth]:
        return [a for a in self.actions if a.measured]

    @property
    def share_covered(self) -> float | None:
        counted = self.with_volume
        return sum(a.covered for a in counted) / len(counted) if counted else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "actions": [{**asdict(a), "covered": a.covered} for a in self.actions],
            "actions_with_volume": len(self.with_volume),
            "share_covered": self.share_covered,
            "required": REQUIRED_COVERAGE,
            "programme": {
                "treated": self.report.programme.treated.customers,
                "control": self.report.programme.control.customers,
                "incremental": round(self.report.programme.incremental, 2),
                "interval": [round(x, 2) for x in self.report.programme.incremental_interval],
            },
        }


def coverage(simulation: Simulation) -> Coverage:
    """The lift report over the simulated days (from the audit log and the stream's outcomes,
    as ``nextbest report lift`` reads them), each action beside the truth."""
    until = simulation.now
    report = measure_lift(simulation.container, simulation.start, until, observed_until=until)
    catalog = simulation.container.catalog
    first: dict[tuple[str, str], Delivery] = {}
    for d in simulation.deliveries:
        if (d.customer_id, d.action_id) not in first:
            first[(d.customer_id, d.action_id)] = d  # deliveries are in time order
    truth: dict[str, int] = {}
    for (customer_id, action_id), d in first.items():
        days = catalog.actions[action_id].attribution_days
        if d.at + timedelta(days=days) > until:
            continue  # the report leaves open windows out
        world = world_of(simulation.worlds, customer_id)
        truth[action_id] = truth.get(action_id, 0) + _caused(world, d, days)
    out = []
    for a in report.actions:
        low, high = a.lift.incremental_interval
        out.append(
            ActionTruth(
                a.action_id,
                a.lift.treated.customers,
                a.lift.control.customers,
                a.lift.treated.converted,
                a.lift.control.converted,
                a.lift.measured,
                round(a.lift.incremental, 2),
                round(low, 2),
                round(high, 2),
                truth.get(a.action_id, 0),
            )
        )
    return Coverage(report, out)


def _caused(world: World, delivery: Delivery, days: int) -> int:
    """Whether she applied for the need within the window (after the decision, up to its
    end, as the report counts) with the bank's contacts, minus whether she would have without
    any (1, 0 or -1); an application's time is the same in both worlds."""
    row, k = world.row(delivery.customer_id), NEED_INDEX[delivery.need]
    after, until = delivery.at, delivery.at + timedelta(days=days)

    def converted(applied: dict[tuple[int, int], list[int]]) -> bool:
        return any(
            after < world.applied_at(row, k, day) <= until for day in applied.get((row, k), ())
        )

    return int(converted(world.applied)) - int(converted(world.applied_without))
