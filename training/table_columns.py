"""A bank's own customer table as training reads it: the file, the label column as 0/1, the
levels of its categorical columns, and the booster's input encoded from them.

Text, boolean and categorical columns are LightGBM native categoricals. Each is fixed to the
levels it had in training, and a level's code is its position in that list
(``training.pyfunc_model.encode``; a level not seen in training becomes missing). The booster is
trained on those codes rather than on pandas ``category`` columns, whose levels a new frame
would not share.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from training import pyfunc_model

#: Enough lines for csv.Sniffer to tell ';' from ',' without reading the whole file.
SNIFF_BYTES = 64 * 1024
CSV_DELIMITERS = ",;\t|"
LABEL_TRUE = frozenset({"yes", "true", "y", "1"})
LABEL_FALSE = frozenset({"no", "false", "n", "0"})


def read_table(path: Path) -> pd.DataFrame:
    """A .csv (separator sniffed: the UCI files use ';'), .parquet or .pq file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(encoding="utf-8", errors="replace", newline="") as head:
            sample = head.read(SNIFF_BYTES)
        try:
            separator = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
        except csv.Error:  # one column, or too few lines to tell
            separator = ","
        return pd.read_csv(path, sep=separator)
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    raise ValueError(
        f"cannot read {path.name}: expected a .csv, .parquet or .pq file, "
        f"not {suffix or 'a file without a suffix'}"
    )


def label_vector(column: pd.Series) -> npt.NDArray[np.int8]:
    """0/1 from yes/no, true/false, y/n, 1/0 or booleans (case and surrounding spaces ignored)."""
    missing = int(column.isna().sum())
    if missing:
        raise ValueError(f"label {column.name!r} has {missing} missing values")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        unexpected = sorted(set(column.drop_duplicates().tolist()) - {0, 1})
        positive = column.to_numpy() == 1
    else:
        text = column.astype(str).str.strip().str.lower()
        unexpected = sorted(set(text.unique()) - LABEL_TRUE - LABEL_FALSE)
        positive = text.isin(LABEL_TRUE).to_numpy()
    if unexpected:
        shown = ", ".join(repr(value) for value in unexpected[:10])
        more = f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""
        raise ValueError(
            f"label {column.name!r} must be yes/no, true/false, y/n or 1/0; found {shown}{more}"
        )
    labels = np.asarray(positive, dtype=np.int8)
    positives = int(labels.sum())
    if positives in (0, len(labels)):
        absent = "positive" if positives == 0 else "negative"
        raise ValueError(f"label {column.name!r} has no {absent} rows; both classes are needed")
    return labels


def category_levels(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The levels of every text, boolean or categorical column, sorted; numbers are not listed.

    Raises ValueError for columns that are neither (dates, for instance): drop or convert them.
    """
    levels: dict[str, list[str]] = {}
    unsupported = []
    for name, column in frame.items():
        if _is_categorical(column):
            levels[str(name)] = sorted(pyfunc_model.as_text(column).dropna().unique())
        elif not pd.api.types.is_numeric_dtype(column):
            unsupported.append(f"{name} ({column.dtype})")
    if unsupported:
        raise ValueError(
            "columns that are neither numbers nor text: "
            + ", ".join(unsupported)
            + "; drop or convert them"
        )
    return levels


def encode_features(
    frame: pd.DataFrame, features: Sequence[str], categories: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """The booster's input as a frame (``training.pyfunc_model.encode``): numbers as float64,
    categorical columns as codes into their levels, missing values and unseen levels NaN."""
    matrix = pyfunc_model.encode(frame, features, categories)
    return pd.DataFrame(matrix, columns=list(features), index=frame.index)


def _is_categorical(column: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(column)
        or pd.api.types.is_string_dtype(column)
        or pd.api.types.is_bool_dtype(column)
        or isinstance(column.dtype, pd.CategoricalDtype)
    )
