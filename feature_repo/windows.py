"""Feature rows from buckets: each feature of ``feature_repo.activity`` reduced over its window,
vectorised across customers."""

from __future__ import annotations

import numpy as np

from feature_repo.activity import (
    FEATURES,
    MAX_DAYS,
    NOT_SEEN_DAYS,
    WINDOWS,
    overdue_working_days,
)
from feature_repo.aggregates import IS_MAX, N_MEASURES, M
from feature_repo.buckets import DAY_US, WindowState


def compute_features(states: list[WindowState]) -> np.ndarray:
    """Feature matrix [customer, feature] for states that have an as-of time, each as of its
    row time (``WindowState.row_time_us``)."""
    k = len(states)
    counts = np.array([len(s.days) for s in states], np.int64)
    rows = np.repeat(np.arange(k), counts)
    days = np.concatenate([s.days for s in states]).astype(np.int64) if k else np.zeros(0)
    measures = np.concatenate([s.measures for s in states]).astype(np.int64) if k else np.zeros(0)
    values = np.concatenate([s.values for s in states]) if k else np.zeros(0)
    today = np.array([s.row_time_us // DAY_US for s in states], np.int64)  # type: ignore[operator]
    return features_from_buckets(rows, days, measures, values, today)


def activity_rows(states: list[WindowState], changes: list[int | None]) -> np.ndarray:
    """Activity rows [customer, ``ACTIVITY_FIELDS``]: the features, then until when each row is
    exact with no new event: her next change (``WindowState.next_change_us``, given), in epoch
    seconds (inf: until her next event)."""
    valid = np.array([np.inf if c is None else c / 1e6 for c in changes], np.float64)
    return np.column_stack([compute_features(states), valid])


def as_activity_rows(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as activity rows: features alone (rows that do not say until when they hold,
    as a load or a test writes them) get a null ``valid_until``."""
    if matrix.ndim == 2 and matrix.shape[1] == len(FEATURES):
        return np.column_stack([matrix, np.full(len(matrix), np.nan)])
    return matrix


def features_from_buckets(
    rows: np.ndarray, days: np.ndarray, measures: np.ndarray, values: np.ndarray, today: np.ndarray
) -> np.ndarray:
    """Feature matrix [customer, feature] from day buckets (customer row, absolute day,
    measure, value; one entry per triple) and each customer's as-of day. The stream and the
    offline backfill both end here, so they cannot disagree on what a feature means."""
    k = len(today)
    age = today[rows] - days
    window: dict[int, np.ndarray] = {}
    is_max = IS_MAX[measures]
    for w in WINDOWS:
        inside = (age >= 0) & (age < w)
        flat = rows[inside] * N_MEASURES + measures[inside]
        sums = np.bincount(flat, weights=values[inside], minlength=k * N_MEASURES)
        maxima = np.zeros(k * N_MEASURES)
        top = inside & is_max
        np.maximum.at(maxima, rows[top] * N_MEASURES + measures[top], values[top])
        window[w] = np.where(IS_MAX, maxima.reshape(k, N_MEASURES), sums.reshape(k, N_MEASURES))
    last_flat = np.full(k * N_MEASURES, -1, np.int64)
    seen_inside = (age >= 0) & (age < MAX_DAYS) & (values != 0)
    np.maximum.at(
        last_flat, rows[seen_inside] * N_MEASURES + measures[seen_inside], days[seen_inside]
    )
    last = last_flat.reshape(k, N_MEASURES)
    first_flat = np.full(k * N_MEASURES, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(
        first_flat, rows[seen_inside] * N_MEASURES + measures[seen_inside], days[seen_inside]
    )
    first = first_flat.reshape(k, N_MEASURES)
    named: dict[str, np.ndarray] = {}
    out = np.zeros((k, len(FEATURES)))
    for j, feature in enumerate(FEATURES):
        if feature.kind == "window":
            column = window[feature.days][:, M[feature.measure]]  # type: ignore[index]
        elif feature.kind == "since":
            seen = last[:, M[feature.measure]]  # type: ignore[index]
            column = np.where(seen >= 0, today - seen, NOT_SEEN_DAYS).astype(np.float64)
        elif feature.kind == "overdue":
            column = overdue_working_days(last[:, M[feature.measure]], today)  # type: ignore[index]
        elif feature.kind == "first":
            seen = last[:, M[feature.measure]]  # type: ignore[index]
            began = first[:, M[feature.measure]]  # type: ignore[index]
            column = np.where(seen >= 0, today - began, NOT_SEEN_DAYS).astype(np.float64)
        else:
            column = feature.derive(named)  # type: ignore[misc]
            if column.shape != (k,):
                column = np.broadcast_to(column, (k,)).copy()
        named[feature.name] = column
        out[:, j] = column
    return out
