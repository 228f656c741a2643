"""The input example of a table with text and boolean columns: typical levels, no customer's."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames

from training.input_example import MIN_LEVEL_ROWS, equals_a_row, synthetic_example


@settings(max_examples=60, deadline=None)
@given(
    data_frames(
        [
            column("job", dtype=object, elements=st.sampled_from(["admin.", "retired", None])),
            column("housing", dtype=bool, elements=st.booleans()),
            column("balance", dtype=np.int64, elements=st.integers(-50, 50)),
        ],
        index=st.builds(pd.RangeIndex, st.integers(1, 40)),
    )
)
def test_text_and_boolean_levels_in_the_example_are_shared_by_many_rows(
    frame: pd.DataFrame,
) -> None:
    row, example = synthetic_example(frame)
    assert list(row.columns) == ["job", "housing", "balance"] and len(row) == 1
    assert row["balance"].dtype == np.int64
    for name in ("job", "housing"):
        value = row[name].iloc[0]
        if not pd.isna(value):
            held = int((frame[name] == value).sum())
            assert held >= MIN_LEVEL_ROWS and held == frame[name].value_counts().max()
            assert row[name].dtype == frame[name].dtype
    if example is not None:
        assert not equals_a_row(frame, example)


def test_the_example_takes_the_most_common_level_and_no_identifier() -> None:
    frame = pd.DataFrame(
        {
            "name": [f"customer {i}" for i in range(30)],
            "job": ["retired"] * 5 + ["admin."] * 25,
            "age": np.arange(30, 60),
        }
    )
    row, example = synthetic_example(frame)
    assert row["name"].isna().all()  # every name is one customer's
    assert row["job"].tolist() == ["admin."] and row["job"].dtype == object
    assert row["age"].tolist() == [44] and row["age"].dtype == frame["age"].dtype
    assert example is not None and not equals_a_row(frame, example)


def test_a_row_equal_to_a_training_row_is_not_logged() -> None:
    frame = pd.DataFrame({"job": ["admin."] * MIN_LEVEL_ROWS, "age": [40] * MIN_LEVEL_ROWS})
    row, example = synthetic_example(frame)
    assert row.iloc[0].tolist() == ["admin.", 40]
    assert example is None
