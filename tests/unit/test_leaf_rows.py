"""The rows a leaf must hold grow with the training window, within bounds: a large bank's trees
are regularised, and a small bank's (the demo's) can still split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from training.fitting import MAX_LEAF_ROWS, MIN_LEAF_ROWS, leaf_rows


def test_a_small_window_still_allows_trees_and_a_large_one_is_capped() -> None:
    assert leaf_rows(7_281) == 45  # the decision benchmark's smoke bank
    assert leaf_rows(81_530) == leaf_rows(162_412) == MAX_LEAF_ROWS  # the training benchmark's
    assert leaf_rows(0) == MIN_LEAF_ROWS


@given(st.integers(0, 10_000_000), st.integers(0, 10_000_000))
def test_leaf_rows_never_shrink_with_more_rows(a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert MIN_LEAF_ROWS <= leaf_rows(small) <= leaf_rows(large) <= MAX_LEAF_ROWS
