"""Reading a table's columns: the label's usual spellings of a binary outcome, and the
categorical encoding (training on a table, with MLflow, is in tests/integration/test_table.py)."""

import numpy as np
import pandas as pd
import pytest

from training.table_columns import encode_features, label_vector


@pytest.mark.parametrize(
    "values",
    [
        ["yes", "no", " YES ", "No"],
        ["true", "False", "TRUE", "false"],
        ["y", "n", "Y", " n"],
        [True, False, True, False],
        [1, 0, 1, 0],
        ["1", "0", "1", "0"],
    ],
)
def test_label_vector_reads_the_usual_spellings_of_a_binary_outcome(values: list[object]) -> None:
    assert label_vector(pd.Series(values, name="y")).tolist() == [1, 0, 1, 0]


def test_label_vector_names_the_values_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="found 'maybe', 'unknown'"):
        label_vector(pd.Series(["yes", "no", "maybe", "unknown"], name="y"))
    with pytest.raises(ValueError, match="found 2"):
        label_vector(pd.Series([0, 1, 2], name="y"))


def test_label_vector_refuses_a_single_class_and_missing_values() -> None:
    with pytest.raises(ValueError, match="no positive rows"):
        label_vector(pd.Series(["no", "no"], name="y"))
    with pytest.raises(ValueError, match="no negative rows"):
        label_vector(pd.Series([True, True], name="y"))
    with pytest.raises(ValueError, match="no positive rows"):
        label_vector(pd.Series([], dtype=object, name="y"))
    with pytest.raises(ValueError, match="1 missing"):
        label_vector(pd.Series(["yes", None, "no"], name="y"))


def test_encode_features_gives_unseen_and_missing_levels_no_code() -> None:
    frame = pd.DataFrame({"segment": ["b", "a", "z", None], "income": [1, 2, 3, 4]})
    encoded = encode_features(frame, ["segment", "income"], {"segment": ["a", "b"]})
    assert encoded["segment"].tolist()[:2] == [1.0, 0.0]
    assert encoded["segment"].isna().tolist() == [False, False, True, True]
    assert encoded.dtypes.tolist() == [np.float64, np.float64]
