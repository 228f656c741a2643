"""Feature rows kept for training: Parquet parts in the folders behind the feature views'
``FileSource``, so a point-in-time training set sees exactly the values serving saw."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.activity import ACTIVITY_FIELDS
from feature_repo.definitions import ACTIVITY_VIEW
from feature_repo.store import StoreLocation
from feature_repo.windows import as_activity_rows


def write_part(folder: Path, table: pa.Table, name: str | None = None) -> Path:
    """Write a Parquet part durably (fsync, then an atomic rename) into an offline folder."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = folder / f".{name}.tmp"
    # One chunk per column: a buffer filled by many small rounds would otherwise be written a
    # chunk at a time. Dictionaries only for the ids: feature values repeat too little to pay
    # for one (the part is smaller and written in about half the time without).
    ids = [c for c in ("customer_id",) if c in table.column_names]
    pq.write_table(table.combine_chunks(), temporary, compression="zstd", use_dictionary=ids)
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    return temporary.rename(folder / name)


class OfflineBuffer:
    """Feature rows waiting to be written to the offline store as one Parquet part. They wait
    as the arrays they were computed in, and become a table once, when written: a timer round
    adds a few rows per midnight, and a table per addition would cost more than the rows."""

    def __init__(self, where: StoreLocation) -> None:
        self.folder = where.offline_dir / ACTIVITY_VIEW
        self.folder.mkdir(parents=True, exist_ok=True)
        self._parts: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        self.rows = 0

    def add(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        self._parts.append((list(customers), np.asarray(as_of_us, np.int64), matrix))
        self.rows += len(customers)

    def drop(self, customers: set[str]) -> None:
        """Forget the buffered rows of ``customers`` (erased while they were buffered)."""
        kept = []
        for who, moments, matrix in self._parts:
            keep = np.fromiter((c not in customers for c in who), bool, len(who))
            if keep.any():
                kept.append(
                    ([c for c, k in zip(who, keep, strict=True) if k], moments[keep], matrix[keep])
                )
        self._parts = kept
        self.rows = sum(len(who) for who, _, _ in kept)

    def flush(self) -> int:
        """Write the buffered rows durably (fsync, then an atomic rename); returns the count."""
        if not self._parts:
            return 0
        write_part(self.folder, self._table())
        written, self._parts, self.rows = self.rows, [], 0
        return written

    def _table(self) -> pa.Table:
        customers = [c for who, _, _ in self._parts for c in who]
        moments = np.concatenate([m for _, m, _ in self._parts])
        matrix = np.vstack([as_activity_rows(x) for _, _, x in self._parts])
        columns: dict[str, Any] = {
            "customer_id": pa.array(customers, pa.string()),
            "event_timestamp": pa.array(moments, pa.timestamp("us", tz="UTC")),
        }
        for j, name in enumerate(ACTIVITY_FIELDS):
            columns[name] = pa.array(matrix[:, j], pa.float64())
        return pa.table(columns)
