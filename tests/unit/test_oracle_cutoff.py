"""The oracle knows what could be known at a snapshot, and nothing of the snapshot's own day."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from consent.rules.vocabulary import NEEDS
from training.bank import life, profiles
from training.bank.spec import BankSpec


@pytest.fixture(scope="module")
def chunk() -> tuple[BankSpec, profiles.People, life.Situations, np.ndarray, life.Outcomes]:
    spec = BankSpec(seed=5, customers=300, days=80)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0]))
    who = profiles.people(rng, spec, 0, spec.customers)
    situations = life.situations(rng, spec, who)
    hazard = life.hazards(spec, who, situations)
    return spec, who, situations, hazard, life.applications(rng, spec, hazard)


def with_onset(situations: life.Situations, s: int, customer: int, onset: int) -> life.Situations:
    """``situations`` with the cash squeeze's first episode of ``customer`` moved to ``onset``
    (its other episodes removed), everything else as it was."""
    onsets, lengths = situations.onset.copy(), situations.length.copy()
    onsets[s, :, customer] = life.NEVER
    onsets[s, 0, customer], lengths[s, 0, customer] = onset, 40
    return replace(situations, onset=onsets, length=lengths)


@pytest.mark.parametrize("customer", [3, 117])
def test_an_episode_beginning_on_the_snapshot_day_is_not_known_at_it(chunk, customer) -> None:
    """The features hold the days before a snapshot; an episode that begins on the snapshot's
    own day is only the chance of one beginning, as if it began a day later. One that began the
    day before is known, and raises the need's propensity."""
    spec, who, situations, hazard, outcomes = chunk
    s = situations.names.index("cash_squeeze")
    day = int(life.snapshot_days(spec)[-1])
    need = NEEDS.index("personal_loan")
    j = len(life.snapshot_days(spec)) - 1

    def propensity(onset: int) -> float:
        moved = with_onset(situations, s, customer, onset)
        return float(life.truth(spec, who, moved, hazard, outcomes)[0][customer, need, j])

    on_the_day, day_after, day_before = propensity(day), propensity(day + 1), propensity(day - 1)
    assert on_the_day >= day_after  # only the chance: an earlier free day can only add to it
    assert on_the_day == propensity(life.NEVER)  # nothing of the episode is known
    assert day_before > 1.5 * on_the_day
