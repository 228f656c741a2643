"""One customer's per-day buckets, what the stream keeps of them, and bucket arithmetic.

A bucket is an absolute day in UTC, a measure (``feature_repo.aggregates``) and a value: the sum
of what the day's events contributed to that measure, or their maximum for "max" measures.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from feature_repo.activity import MAX_DAYS
from feature_repo.aggregates import IS_MAX, N_MEASURES

#: A bucket's day is an event time in epoch microseconds floor-divided by this.
DAY_US = 86_400 * 1_000_000


@dataclass
class WindowState:
    """One customer's buckets (absolute day, measure, value; one entry per pair), her latest
    event time, the time her features were last advanced to by a timer, and the event ids seen
    within the allowed lateness."""

    #: The customer's latest event time: the allowed lateness counts back from it.
    as_of_us: int | None = None
    days: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    measures: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    seen: dict[str, int] = field(default_factory=dict)
    #: The start of the latest day a timer advanced her features to (None: never). Windows
    #: move with the calendar, not with her events: see ``row_time_us``.
    clock_us: int | None = None

    # Version 1: as_of (-1: none), entries, seen ids. Version 2 starts with -2 (an as-of time
    # is never below -1), then as_of, clock (-1: none), entries, seen ids.
    _HEADER = struct.Struct("<qII")
    _HEADER_V2 = struct.Struct("<qqqII")
    _V2 = -2

    @property
    def row_time_us(self) -> int | None:
        """The time her features are exact as of: her latest event, or the day a timer moved
        them to, whichever is later (None: no event yet)."""
        if self.as_of_us is None:
            return None
        return self.as_of_us if self.clock_us is None else max(self.as_of_us, self.clock_us)

    def advance_to(self, moment_us: int) -> None:
        """Move her features to the start of ``moment_us``'s day, if that is later than her row
        time's day."""
        row = self.row_time_us
        day = moment_us // DAY_US
        if row is not None and day > row // DAY_US:
            self.clock_us = day * DAY_US

    def next_change_us(self) -> int | None:
        """The next moment her features change with no new event: the next midnight (UTC),
        while any non-zero bucket is inside the longest window (a window sum drops it, a day
        count ticks); None once none is (every feature then stays as it is)."""
        row = self.row_time_us
        if row is None:
            return None
        today = row // DAY_US
        inside = (self.days.astype(np.int64) > today - MAX_DAYS) & (self.values != 0)
        return (today + 1) * DAY_US if inside.any() else None

    def to_bytes(self) -> bytes:
        ids = "\n".join(self.seen).encode()
        if self.seen and ids.count(b"\n") != len(self.seen) - 1:
            # Ids of the safe pattern have no newline; one that did would corrupt the state.
            raise ValueError("an event id contains a newline")
        times = np.fromiter(self.seen.values(), np.int64, len(self.seen))
        return b"".join(
            (
                self._HEADER_V2.pack(
                    self._V2,
                    -1 if self.as_of_us is None else self.as_of_us,
                    -1 if self.clock_us is None else self.clock_us,
                    len(self.days),
                    len(self.seen),
                ),
                self.days.astype(np.int32).tobytes(),
                self.measures.astype(np.int8).tobytes(),
                self.values.astype(np.float64).tobytes(),
                times.tobytes(),
                ids,
            )
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> WindowState:
        (first,) = struct.unpack_from("<q", blob)
        if first == cls._V2:
            _, as_of, clock, n, k = cls._HEADER_V2.unpack_from(blob)
            at = cls._HEADER_V2.size
        else:
            as_of, n, k = cls._HEADER.unpack_from(blob)
            clock, at = -1, cls._HEADER.size
        days = np.frombuffer(blob, np.int32, n, at)
        at += 4 * n
        measures = np.frombuffer(blob, np.int8, n, at)
        at += n
        values = np.frombuffer(blob, np.float64, n, at)
        at += 8 * n
        times = np.frombuffer(blob, np.int64, k, at)
        at += 8 * k
        ids = blob[at:].decode().split("\n") if k else []
        return cls(
            None if as_of < 0 else as_of,
            days,
            measures,
            values,
            dict(zip(ids, times.tolist(), strict=True)),
            None if clock < 0 else clock,
        )


def combine_buckets(
    rows: np.ndarray, days: np.ndarray, measures: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per (row, day, measure): values summed, or the maximum for "max" measures;
    sorted by row, then day, then measure (int64 arrays, values float64)."""
    measures = measures.astype(np.int64)
    base = int(days.min()) if len(days) else 0
    span = int(days.max()) - base + 1 if len(days) else 1
    key = (rows.astype(np.int64) * span + (days - base)) * N_MEASURES + measures
    unique, merged = combine_keys(key, values)
    rest = unique // N_MEASURES
    return rest // span, rest % span + base, unique % N_MEASURES, merged


def combine_keys(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per bucket key (``key % N_MEASURES`` is its measure), the keys sorted: the
    values summed in the order given, from 0, or their maximum for "max" measures."""
    unique, inverse = np.unique(keys, return_inverse=True)
    merged = np.bincount(inverse, weights=values, minlength=len(unique))
    is_max = IS_MAX[keys % N_MEASURES]
    if is_max.any():
        maxima = np.full(len(unique), -np.inf)
        np.maximum.at(maxima, inverse[is_max], values[is_max])
        merged = np.where(IS_MAX[unique % N_MEASURES], maxima, merged)
    return unique, merged
