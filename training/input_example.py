"""The input example logged with a model to MLflow: made up, never a customer's row.

MLflow keeps the input example beside the model for as long as the run exists, where no erasure
reaches it. So the example is one row made of per-column figures of the training rows, taken
from no single customer: the median of each numeric column (missing where a column has no
value) and the most common level of each text, boolean or categorical column (missing unless
at least ``MIN_LEVEL_ROWS`` rows share it: a level so few rows hold could point at them). It
shows the shape and types the model takes, and is something it can score at log time. If that
row happens to equal a training row (a tiny or degenerate table), no example is logged; the
signature still describes the input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_LEVEL_ROWS = 10


def median_row(frame: pd.DataFrame) -> pd.DataFrame:
    """One row: each numeric column's median over ``frame`` (NaN for a column of no values)
    and each other column's most common level, in the column's own type (an integer column's
    median rounded), so the signature inferred from it is the one the training rows would
    give."""
    values = {}
    for name in frame.columns:
        column = frame[name]
        if not _numeric(column):
            values[name] = _common_level(column)
            continue
        numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        median = float(np.nanmedian(numbers)) if np.isfinite(numbers).any() else np.nan
        if pd.api.types.is_integer_dtype(column.dtype) and not np.isnan(median):
            values[name] = pd.Series([round(median)], dtype=column.dtype)
        else:
            values[name] = pd.Series([median], dtype=np.float64)
    return pd.DataFrame(values, columns=list(frame.columns))


def equals_a_row(frame: pd.DataFrame, row: pd.DataFrame) -> bool:
    """Whether some row of ``frame`` holds exactly ``row``'s values (missing equal to missing)."""
    candidates = np.ones(len(frame), dtype=bool)
    for name in frame.columns:
        value = row[name].iloc[0]
        column = frame[name]
        if pd.isna(value):
            same = column.isna().to_numpy()
        elif _numeric(column):
            same = column.to_numpy(dtype=np.float64, na_value=np.nan) == value
        else:
            same = (column == value).to_numpy(dtype=bool, na_value=False)
        candidates &= same
        if not candidates.any():
            return False
    return True


def synthetic_example(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(a row to infer the signature from, the input example to log or None)."""
    row = median_row(frame)
    return row, None if equals_a_row(frame, row) else row


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
        column.dtype
    )


def _common_level(column: pd.Series) -> pd.Series:
    """The level most rows hold (ties: the first in sort order), or missing if fewer than
    ``MIN_LEVEL_ROWS`` hold it; in the column's type where that type can be missing."""
    counts = column.value_counts(dropna=True)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    if not ranked or ranked[0][1] < MIN_LEVEL_ROWS:
        dtype = object if pd.api.types.is_bool_dtype(column.dtype) else column.dtype
        return pd.Series([None], dtype=dtype)
    return pd.Series([ranked[0][0]], dtype=column.dtype)
