"""The statistics of lift: conversion in treatment against control, their difference with a
confidence interval, and the incremental conversions it implies.

The interval is Agresti and Caffo's for a difference of two proportions (add one conversion
and one non-conversion to each arm, then Wald): simple, and it keeps its coverage for the small
rates and small control groups of a bank's offers, where the plain Wald interval is too narrow
(Agresti and Caffo, "Simple and effective confidence intervals for proportions and differences
of proportions result from adding two successes and two failures", The American Statistician
54(4), 2000)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

#: The interval the report gives: 90%, two-sided.
CONFIDENCE = 0.90
#: An action is reported as measured only with at least this many customers in each arm and
#: this many conversions in both together; below that the interval says little.
MIN_CUSTOMERS_PER_ARM = 200
MIN_CONVERSIONS = 20


@dataclass(frozen=True)
class Arm:
    customers: int
    converted: int

    @property
    def rate(self) -> float:
        return self.converted / self.customers if self.customers else 0.0

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Wilson's interval for the arm's conversion rate (for plots)."""
        n = self.customers
        if n == 0:
            return 0.0, 1.0
        z = _z(confidence)
        p = self.rate
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Lift:
    treated: Arm
    control: Arm
    #: Conversion rate in treatment minus control, and its interval.
    difference: float
    low: float
    high: float
    confidence: float

    @property
    def incremental(self) -> float:
        """Conversions the action caused among the treated: their number times the difference."""
        return self.treated.customers * self.difference

    @property
    def incremental_interval(self) -> tuple[float, float]:
        return self.treated.customers * self.low, self.treated.customers * self.high

    @property
    def measured(self) -> bool:
        """Whether there is volume enough for the interval to mean something."""
        return (
            min(self.treated.customers, self.control.customers) >= MIN_CUSTOMERS_PER_ARM
            and self.treated.converted + self.control.converted >= MIN_CONVERSIONS
        )


def lift(treated: Arm, control: Arm, confidence: float = CONFIDENCE) -> Lift:
    difference = treated.rate - control.rate
    if not treated.customers or not control.customers:
        return Lift(treated, control, difference, -1.0, 1.0, confidence)
    p1 = (treated.converted + 1) / (treated.customers + 2)
    p0 = (control.converted + 1) / (control.customers + 2)
    se = (p1 * (1 - p1) / (treated.customers + 2) + p0 * (1 - p0) / (control.customers + 2)) ** 0.5
    z = _z(confidence)
    centre = p1 - p0
    return Lift(
        treated,
        control,
        difference,
        max(-1.0, centre - z * se),
        min(1.0, centre + z * se),
        confidence,
    )


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)
