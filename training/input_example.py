"""The input example logged with a model to MLflow: made up, never a customer's row.

MLflow keeps the input example beside the model for as long as the run exists, where no erasure
reaches it. So the example is one row of per-column medians of the training rows (missing where
a column has no value): the shape and types the model takes, and something it can score at log
time, taken from no single customer. If that row happens to equal a training row (a tiny or
degenerate table), no example is logged; the signature still describes the input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def median_row(frame: pd.DataFrame) -> pd.DataFrame:
    """One row: each column's median over ``frame`` (NaN for a column of no values), in the
    column's own type (an integer column's median rounded), so the signature inferred from it
    is the one the training rows would give."""
    values = {}
    for name in frame.columns:
        column = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        median = float(np.nanmedian(column)) if np.isfinite(column).any() else np.nan
        if pd.api.types.is_integer_dtype(frame[name].dtype) and not np.isnan(median):
            values[name] = pd.Series([round(median)], dtype=frame[name].dtype)
        else:
            values[name] = pd.Series([median], dtype=np.float64)
    return pd.DataFrame(values, columns=list(frame.columns))


def equals_a_row(frame: pd.DataFrame, row: pd.DataFrame) -> bool:
    """Whether some row of ``frame`` holds exactly ``row``'s values (NaN equal to NaN)."""
    candidates = np.ones(len(frame), dtype=bool)
    for name in frame.columns:
        value = row[name].iloc[0]
        column = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        same = np.isnan(column) if np.isnan(value) else column == value
        candidates &= same
        if not candidates.any():
            return False
    return True


def synthetic_example(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(a row to infer the signature from, the input example to log or None)."""
    row = median_row(frame)
    return row, None if equals_a_row(frame, row) else row
