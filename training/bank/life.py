"""Latent life situations, the daily hazard of applying for each need, outcomes and the truth.

Every customer carries, per need, a daily hazard: a small base rate plus what any active
situation adds (ramping up over its first third). Applications are drawn day by day from that
hazard; after one, the need's hazard is zero for ``cooldown_days``. Because the generator knows
the hazard path, it knows each customer's true probability of applying within the horizon after
every snapshot: that probability is the ground truth, and its ROC AUC against the realised labels
is the oracle, the ceiling any model can reach on average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.bank.profiles import People
from training.bank.spec import NEEDS, BankSpec

#: Base monthly chance of applying, per need, without any situation.
BASE_MONTHLY = {
    "mortgage": 0.0015,
    "investment": 0.0030,
    "protection": 0.0020,
    "credit_card": 0.0040,
    "personal_loan": 0.0040,
    "term_deposit": 0.0040,
    "pension": 0.0020,
}
#: Holding the product already makes another application less likely (top-ups, second cards).
HOLDING_FACTOR = 0.25
NEED_INDEX = {need: i for i, need in enumerate(NEEDS)}


@dataclass
class Situations:
    """Per situation: onset day (may be negative: already under way at the start), length."""

    names: tuple[str, ...]
    onset: np.ndarray  # [situation, customer] int, or a large sentinel when none
    length: np.ndarray  # [situation, customer]

    def active(self, name: str, days: int) -> np.ndarray:
        """[customer, day] bool: the situation is under way on that day."""
        s = self.names.index(name)
        d = np.arange(days)
        return (d >= self.onset[s][:, None]) & (d < (self.onset[s] + self.length[s])[:, None])

    def starts(self, name: str, days: int) -> tuple[np.ndarray, np.ndarray]:
        """Customers whose situation starts inside the period, and the day it starts."""
        s = self.names.index(name)
        who = np.flatnonzero((self.onset[s] >= 0) & (self.onset[s] < days))
        return who, self.onset[s][who]


NEVER = 1 << 30


def resolved(spec: BankSpec, life: Situations, outcomes: Outcomes) -> Situations:
    """The situations as customers live them: one ends when its main need is applied for (the
    browsing stops once the application is in). Hazards are drawn from the planned situations;
    after an application the need's hazard is zero for the cool-down anyway."""
    length = life.length.copy()
    for s, name in enumerate(life.names):
        need = NEED_INDEX[next(iter(spec.situations[name].needs))]
        mine = outcomes.need == need
        customer, day = outcomes.customer[mine], outcomes.day[mine]
        onset = life.onset[s][customer]
        inside = (day >= onset) & (day < onset + length[s][customer])
        np.minimum.at(length[s], customer[inside], (day - onset + 1)[inside])
    return Situations(life.names, life.onset, length)


def _eligibility(name: str, who: People) -> np.ndarray:
    """Relative onset rate per customer (0: never)."""
    age, income, emp, seg = who.age, who.income, who.employment, who.segment
    working = (emp == 0) | (emp == 1)
    if name == "home_purchase":
        ok = ~who.holds["mortgage"] & (age >= 23) & (age <= 55) & working
        return ok * np.clip(income / 80_000, 0.5, 3.0)
    if name == "windfall":
        return np.where(seg >= 1, 2.0, 1.0)
    if name == "family_change":
        return ((age >= 22) & (age <= 45)) * 1.0
    if name == "travel_spending":
        return ((age >= 20) & (age <= 72) & (income > 40_000)) * 1.0
    if name == "cash_squeeze":
        return np.where(emp == 2, 3.0, np.where(seg == 0, 1.5, 0.5))
    if name == "retirement_approach":
        return ((age >= 52) & (age <= 66) & (emp != 3)) * 1.0
    if name == "idle_cash":
        return (income > 60_000) * np.where(seg >= 1, 2.0, 1.0)
    raise ValueError(f"unknown situation {name!r}")


def situations(rng: np.random.Generator, spec: BankSpec, who: People) -> Situations:
    names = tuple(spec.situations)
    n = len(who)
    onset = np.full((len(names), n), NEVER, dtype=np.int64)
    length = np.zeros((len(names), n), dtype=np.int64)
    for s, name in enumerate(names):
        situation = spec.situations[name]
        rate = situation.onset_per_month / 30 * _eligibility(name, who)
        # The first onset of a Poisson process started max_days before the period, so some
        # situations are already under way when the period begins.
        wait = rng.exponential(1.0, n) / np.maximum(rate, 1e-12)
        start = np.floor(wait).astype(np.int64) - situation.max_days
        happens = (rate > 0) & (start < spec.days)
        onset[s] = np.where(happens, start, NEVER)
        length[s] = rng.integers(situation.min_days, situation.max_days + 1, n)
    return Situations(names, onset, length)


def hazards(spec: BankSpec, who: People, life: Situations) -> np.ndarray:
    """[customer, need, day] daily hazard of an application."""
    n, days = len(who), spec.days
    h = np.zeros((n, len(NEEDS), days), dtype=np.float64)
    for need, monthly in BASE_MONTHLY.items():
        h[:, NEED_INDEX[need], :] = monthly / 30
    d = np.arange(days)
    for s, name in enumerate(life.names):
        onset, length = life.onset[s][:, None], life.length[s][:, None]
        t = d[None, :] - onset
        ramp = np.clip((t + 1) / np.maximum(length / 3, 1), 0, 1) * ((t >= 0) & (t < length))
        for need, peak in spec.situations[name].needs.items():
            h[:, NEED_INDEX[need], :] += peak * ramp
    for need in NEEDS:
        held = who.holds[need]
        h[held, NEED_INDEX[need], :] *= HOLDING_FACTOR
    return np.clip(h, 0, 0.5)


@dataclass
class Outcomes:
    customer: np.ndarray  # index in chunk
    need: np.ndarray  # index into NEEDS
    day: np.ndarray


def applications(rng: np.random.Generator, spec: BankSpec, h: np.ndarray) -> Outcomes:
    """Draw applications day by day: the first day the hazard fires, then a cool-down."""
    n, needs, days = h.shape
    fires = rng.random(h.shape) < h
    d = np.arange(days)
    available = np.zeros((n, needs), dtype=np.int64)
    found_c, found_n, found_d = [], [], []
    while True:
        mask = fires & (d[None, None, :] >= available[:, :, None])
        has = mask.any(axis=2)
        if not has.any():
            break
        first = mask.argmax(axis=2)
        c, k = np.nonzero(has)
        found_c.append(c)
        found_n.append(k)
        found_d.append(first[c, k])
        available = np.where(has, first + spec.cooldown_days + 1, days)
    if not found_c:
        empty = np.zeros(0, dtype=np.int64)
        return Outcomes(empty, empty, empty)
    customer, need, day = (np.concatenate(x) for x in (found_c, found_n, found_d))
    order = np.lexsort((need, customer, day))
    return Outcomes(customer[order], need[order], day[order])


def snapshot_days(spec: BankSpec) -> np.ndarray:
    every, horizon = spec.truth_every_days, spec.truth_horizon_days
    return np.arange(every, spec.days - horizon + 1, every)


def _last_before(outcomes: Outcomes, n: int, needs: int, day: int) -> np.ndarray:
    """[customer, need] day of the latest application before ``day`` (-NEVER: none)."""
    last = np.full((n, needs), -NEVER, dtype=np.int64)
    before = outcomes.day < day
    np.maximum.at(last, (outcomes.customer[before], outcomes.need[before]), outcomes.day[before])
    return last


def truth(
    spec: BankSpec, who: People, life: Situations, h: np.ndarray, outcomes: Outcomes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per [customer, need, snapshot] for the truth horizon: the propensity, the clairvoyant
    propensity and the realised label.

    The **propensity** is what could be known at the snapshot: the base rate, the holdings, a
    cool-down after an earlier application, and the situations that have begun by then (with
    their planned course); a situation that has not begun yet enters only as its chance of
    beginning inside the horizon (onsets are memoryless, at the customer's eligible rate). This
    is the ceiling a model can reach, and what its ratio is measured against.

    The **clairvoyant** propensity also knows which situations will begin inside the horizon: it
    uses the whole hazard path, future included, and is reported beside it for comparison.
    """
    n, needs, _days = h.shape
    snaps = snapshot_days(spec)
    horizon, cooldown = spec.truth_horizon_days, spec.cooldown_days
    log_survive = np.concatenate([np.zeros((n, needs, 1)), np.cumsum(np.log1p(-h), axis=2)], axis=2)
    base = np.zeros((n, needs))
    for need, monthly in BASE_MONTHLY.items():
        base[:, NEED_INDEX[need]] = monthly / 30
    hold = np.ones((n, needs))
    for need in NEEDS:
        hold[who.holds[need], NEED_INDEX[need]] = HOLDING_FACTOR
    per_situation = [
        (
            s,
            [(NEED_INDEX[k], peak) for k, peak in spec.situations[name].needs.items()],
            spec.situations[name].onset_per_month / 30 * _eligibility(name, who),
            (spec.situations[name].min_days + spec.situations[name].max_days) / 2,
        )
        for s, name in enumerate(life.names)
    ]
    t = np.arange(horizon)
    propensity = np.zeros((n, needs, len(snaps)), dtype=np.float64)
    clairvoyant = np.zeros((n, needs, len(snaps)), dtype=np.float64)
    label = np.zeros((n, needs, len(snaps)), dtype=np.int8)
    for j, s in enumerate(snaps):
        # The latest application before the snapshot, if any, silences the need for a while.
        last = _last_before(outcomes, n, needs, s)
        begin = np.clip(np.maximum(s, last + cooldown + 1), s, s + horizon)
        end = s + horizon
        survive = np.exp(
            np.take_along_axis(log_survive, np.full((n, needs, 1), end), axis=2)[..., 0]
            - np.take_along_axis(log_survive, begin[..., None], axis=2)[..., 0]
        )
        clairvoyant[:, :, j] = 1.0 - survive
        # Known at s: base, holdings and the situations under way (or over) by then.
        window = np.repeat(base[:, :, None], horizon, axis=2)
        future = np.ones((n, needs))
        for si, effects, rate, mean_length in per_situation:
            onset, length = life.onset[si], life.length[si]
            begun = onset <= s
            age = (s + t)[None, :] - onset[:, None]
            ramp = np.clip((age + 1) / np.maximum(length[:, None] / 3, 1), 0, 1)
            ramp *= (age >= 0) & (age < length[:, None]) & begun[:, None]
            # Not begun: it may begin on day s + k (k >= 1) with a geometric chance.
            q = np.exp(-rate)
            k = np.arange(1, horizon)
            chance = (1 - q)[:, None] * q[:, None] ** (k - 1)[None, :]  # [customer, k]
            for index, peak in effects:
                window[:, index, :] += peak * ramp
                # Hazard such an onset adds inside [max(begin, s + k), end).
                first = begin[:, index] - s  # offset where the need can fire again
                steps = np.arange(horizon)
                onset_ramp = np.clip((steps + 1) / max(mean_length / 3, 1), 0, 1)
                onset_ramp *= steps < mean_length
                cum = np.concatenate([[0.0], np.cumsum(onset_ramp)])
                # For onset k, days d in [max(first, k), horizon): ramp index d - k.
                lo = np.maximum(first[:, None], k[None, :]) - k[None, :]
                hi = horizon - k[None, :]
                added = peak * hold[:, index][:, None] * (cum[hi] - cum[np.minimum(lo, hi)])
                expected = (chance * np.exp(-added)).sum(axis=1) + (1 - chance.sum(axis=1))
                future[:, index] *= np.where(begun, 1.0, expected)
        window = np.clip(window * hold[:, :, None], 0, 0.5)
        inside_window = t[None, None, :] >= (begin - s)[:, :, None]
        known = np.exp((np.log1p(-window) * inside_window).sum(axis=2))
        propensity[:, :, j] = 1.0 - known * future
        inside = (outcomes.day >= s) & (outcomes.day < end)
        label[outcomes.customer[inside], outcomes.need[inside], j] = 1
    return propensity, clairvoyant, label
