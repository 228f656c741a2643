"""The breaker in front of the online store: down opens it at once, late opens it only when
late is the rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.adapters.features.breaker import LATE_WINDOW, Breaker, OnlineStoreUnavailable
from service.adapters.features.redis_link import ReadLate
from tests.doubles import Clock

COOL_DOWN = 1.0


def read(breaker: Breaker, outcome: BaseException | None) -> None:
    """One read through ``breaker`` ending with ``outcome`` (None: answered in time)."""
    with breaker:
        if outcome is not None:
            raise outcome


def is_open(breaker: Breaker) -> bool:
    try:
        read(breaker, None)
    except OnlineStoreUnavailable:
        return True
    return False


@pytest.mark.parametrize(
    "failure", [ConnectionError("lost"), TimeoutError("nothing answered"), OSError("refused")]
)
def test_a_store_that_is_down_opens_it_at_once_for_the_cool_down(failure) -> None:
    clock = Clock()
    breaker = Breaker(COOL_DOWN, clock)
    with pytest.raises(type(failure)):
        read(breaker, failure)
    with pytest.raises(OnlineStoreUnavailable):
        read(breaker, None)
    clock.now += COOL_DOWN
    assert not is_open(breaker)  # the probe is answered: closed again


def test_late_replies_among_replies_in_time_fail_only_their_own_reads() -> None:
    breaker = Breaker(COOL_DOWN, Clock())
    for i in range(10 * LATE_WINDOW):
        late = i % 3 == 0  # a third late: a busy process, not a slow store
        if late:
            with pytest.raises(ReadLate):
                read(breaker, ReadLate())
        else:
            read(breaker, None)


def test_a_store_whose_replies_are_all_late_opens_it_within_half_a_window() -> None:
    clock = Clock()
    breaker = Breaker(COOL_DOWN, clock)
    for _ in range(LATE_WINDOW // 2):
        with pytest.raises(ReadLate):
            read(breaker, ReadLate())
    with pytest.raises(OnlineStoreUnavailable):
        read(breaker, None)
    clock.now += COOL_DOWN
    assert not is_open(breaker)


@given(st.lists(st.booleans(), max_size=200))
def test_it_opens_exactly_when_half_of_the_last_window_was_late(outcomes: list[bool]) -> None:
    """For any sequence of late and timely reads, the breaker refuses the next read exactly when
    some read ended with late reads at half or more of the last ``LATE_WINDOW`` read since the
    last opening, and the cool-down has not ended (the clock does not move here)."""
    breaker = Breaker(COOL_DOWN, Clock())
    window: list[bool] = []
    opened = False
    for late in outcomes:
        if opened:
            with pytest.raises(OnlineStoreUnavailable):
                read(breaker, ReadLate() if late else None)
            continue
        if late:
            with pytest.raises(ReadLate):
                read(breaker, ReadLate())
        else:
            read(breaker, None)
        window = [*window, late][-LATE_WINDOW:]
        opened = 2 * sum(window) >= LATE_WINDOW
    assert is_open(breaker) == opened
