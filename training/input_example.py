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
    """One row: each column's median over ``frame`` (float64; NaN for a column of no values)."""
    values = {
        name: [float(np.nanmedian(col)) if np.isfinite(col).any() else np.nan]
        for name, col in ((n, frame[n].to_numpy(dtype=np.float64, na_value=np.nan)) for n in frame)
    }
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
