"""The breaker the decision path asks before waiting for the operational store."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.stores.breaker import Breaker, StoreNotAnswering
from tests.doubles import Clock

COOL_DOWN = 0.5


def test_closed_it_lets_everyone_through_and_a_failure_opens_it() -> None:
    clock = Clock()
    breaker = Breaker("the store", COOL_DOWN, clock)
    for _ in range(3):
        breaker.admit()
    breaker.failed()
    with pytest.raises(StoreNotAnswering, match="the store"):
        breaker.admit()


def test_after_the_cool_down_one_caller_probes_and_its_answer_decides() -> None:
    clock = Clock()
    breaker = Breaker("the store", COOL_DOWN, clock)
    breaker.failed()
    clock.now += COOL_DOWN
    breaker.admit()  # the probe
    with pytest.raises(StoreNotAnswering):
        breaker.admit()  # the others still wait for it
    breaker.failed()  # the probe found the store still stalled: another cool-down
    clock.now += COOL_DOWN / 2
    with pytest.raises(StoreNotAnswering):
        breaker.admit()
    clock.now += COOL_DOWN / 2
    breaker.admit()
    breaker.succeeded()
    assert not breaker.tripped
    breaker.admit()
    breaker.admit()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "failed", "succeeded"]),
            st.floats(min_value=0, max_value=2 * COOL_DOWN),
        ),
        max_size=60,
    )
)
def test_while_tripped_at_most_one_caller_per_cool_down_waits_for_the_store(
    steps: list[tuple[str, float]],
) -> None:
    """Whatever happens, a tripped breaker admits at most one caller per cool-down (the probe),
    and a closed one admits everyone."""
    clock = Clock()
    breaker = Breaker("the store", COOL_DOWN, clock)
    admitted_while_tripped: list[float] = []
    for step, pause in steps:
        clock.now += pause
        if step == "failed":
            breaker.failed()
        elif step == "succeeded":
            breaker.succeeded()
            admitted_while_tripped.clear()
        else:
            tripped = breaker.tripped
            try:
                breaker.admit()
            except StoreNotAnswering:
                assert tripped
                continue
            if tripped:
                admitted_while_tripped.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(admitted_while_tripped)]
    assert all(gap >= COOL_DOWN - 1e-9 for gap in gaps)  # the clock's sums, in floating point
