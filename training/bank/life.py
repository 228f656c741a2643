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

from consent.rules.vocabulary import NEEDS
from training.bank.profiles import People
from training.bank.spec import BankSpec

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
NEED_INDEX: dict[str, int] = {need: i for i, need in enumerate(NEEDS)}


@dataclass
class Situations:
    """Per situation and episode: onset day (may be negative: already under way at the start)
    and planned length. Situations recur: once an episode ends, the next begins after a fresh
    exponential wait (a renewal process), so having been in one says nothing about the next."""

    names: tuple[str, ...]
    onset: np.ndarray  # [situation, episode, customer] int, NEVER when there is no such episode
    length: np.ndarray  # [situation, episode, customer]

    def active(self, name: str, days: int) -> np.ndarray:
        """[customer, day] bool: the situation is under way on that day."""
        s = self.names.index(name)
        d = np.arange(days)
        out = np.zeros((self.onset.shape[2], days), dtype=bool)
        for onset, length in zip(self.onset[s], self.length[s], strict=True):
            out |= (d >= onset[:, None]) & (d < (onset + length)[:, None])
        return out

    def starts(self, name: str, days: int) -> tuple[np.ndarray, np.ndarray]:
        """Customers whose situation starts inside the period, and the day it starts (one entry
        per episode, ordered by customer and day)."""
        s = self.names.index(name)
        who, day = [], []
        for onset in self.onset[s]:
            c = np.flatnonzero((onset >= 0) & (onset < days))
            who.append(c)
            day.append(onset[c])
        customer, start = np.concatenate(who), np.concatenate(day)
        order = np.lexsort((start, customer))
        return customer[order], start[order]


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
        for e in range(life.onset.shape[1]):
            onset = life.onset[s, e][customer]
            inside = (day >= onset) & (day < onset + length[s, e][customer])
            np.minimum.at(length[s, e], customer[inside], (day - onset + 1)[inside])
    return Situations(life.names, life.onset, length)


def _eligibility(name: str, who: People) -> np.ndarray:
    """Relative onset rate per customer (0: never)."""
    age, income, emp, seg = who.age, who.income, who.employment, who.segment
    working = np.isin(emp, (0, 1))  # employed or self-employed
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
        not_retired = np.isin(emp, (3,), invert=True)
        return ((age >= 52) & (age <= 66) & not_retired) * 1.0
    if name == "idle_cash":
        return (income > 60_000) * np.where(seg >= 1, 2.0, 1.0)
    raise ValueError(f"unknown situation {name!r}")


def situations(rng: np.random.Generator, spec: BankSpec, who: People) -> Situations:
    names = tuple(spec.situations)
    n = len(who)
    per_situation: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    for name in names:
        situation = spec.situations[name]
        rate = situation.onset_per_month / 30 * _eligibility(name, who)
        # A renewal process started max_days before the period, so some situations are
        # already under way when the period begins: wait, live an episode, wait again.
        start = np.full(n, -situation.max_days, dtype=np.int64)
        alive = rate > 0
        onsets, lengths = [], []
        while True:
            wait = rng.exponential(1.0, n) / np.maximum(rate, 1e-12)
            onset = start + np.floor(np.minimum(wait, NEVER)).astype(np.int64)
            length = rng.integers(situation.min_days, situation.max_days + 1, n)
            alive &= onset < spec.days
            if not alive.any():
                break
            onsets.append(np.where(alive, onset, NEVER))
            lengths.append(np.where(alive, length, 0))
            start = onset + length
        per_situation.append((onsets, lengths))
    episodes = max(1, max(len(o) for o, _ in per_situation))
    onset_all = np.full((len(names), episodes, n), NEVER, dtype=np.int64)
    length_all = np.zeros((len(names), episodes, n), dtype=np.int64)
    for s, (onsets, lengths) in enumerate(per_situation):
        for e, (o, ln) in enumerate(zip(onsets, lengths, strict=True)):
            onset_all[s, e], length_all[s, e] = o, ln
    return Situations(names, onset_all, length_all)


def hazards(spec: BankSpec, who: People, life: Situations) -> np.ndarray:
    """[customer, need, day] daily hazard of an application."""
    n, days = len(who), spec.days
    h = np.zeros((n, len(NEEDS), days), dtype=np.float64)
    for need, monthly in BASE_MONTHLY.items():
        h[:, NEED_INDEX[need], :] = monthly / 30
    d = np.arange(days)
    for s, name in enumerate(life.names):
        for e in range(life.onset.shape[1]):
            onset, length = life.onset[s, e][:, None], life.length[s, e][:, None]
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
    their planned course); the next episode of a situation enters only as its chance of
    beginning inside the horizon (onsets are memoryless at the customer's eligible rate, from
    the day the episode under way, if any, ends). This
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
            # Episodes begun by s add their planned course; the one under way (if any) must
            # end before the next can begin.
            ramp = np.zeros((n, horizon))
            busy_until = np.full(n, s, dtype=np.int64)
            for onset, length in zip(life.onset[si], life.length[si], strict=True):
                # The snapshot is the start of day s: the features hold the days before it, so
                # an episode beginning on day s has not begun yet (it is one of the onsets
                # below, weighed by its chance).
                begun = onset < s
                age = (s + t)[None, :] - onset[:, None]
                ramp += np.clip((age + 1) / np.maximum(length[:, None] / 3, 1), 0, 1) * (
                    (age >= 0) & (age < length[:, None]) & begun[:, None]
                )
                busy_until = np.where(begun, np.maximum(busy_until, onset + length), busy_until)
            # The next onset: memoryless at the customer's rate from the first free day.
            free = busy_until - s  # >= 0
            q = np.exp(-rate)
            k = np.arange(horizon)
            after = k[None, :] - free[:, None]
            chance = np.where(
                after >= 0, (1 - q)[:, None] * q[:, None] ** np.maximum(after, 0), 0.0
            )  # [customer, k]: the next episode begins on day s + k
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
                future[:, index] *= expected
        window = np.clip(window * hold[:, :, None], 0, 0.5)
        inside_window = t[None, None, :] >= (begin - s)[:, :, None]
        known = np.exp((np.log1p(-window) * inside_window).sum(axis=2))
        propensity[:, :, j] = 1.0 - known * future
        inside = (outcomes.day >= s) & (outcomes.day < end)
        label[outcomes.customer[inside], outcomes.need[inside], j] = 1
    return propensity, clairvoyant, label
