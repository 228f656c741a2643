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
import pyarrow.compute as pc
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
    pq.write_table(table, temporary, compression="zstd")
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    return temporary.rename(folder / name)


class OfflineBuffer:
    """Feature rows waiting to be written to the offline store as one Parquet part."""

    def __init__(self, where: StoreLocation) -> None:
        self.folder = where.offline_dir / ACTIVITY_VIEW
        self.folder.mkdir(parents=True, exist_ok=True)
        self._parts: list[pa.Table] = []
        self.rows = 0

    def add(self, customers: list[str], as_of_us: np.ndarray, matrix: np.ndarray) -> None:
        if not customers:
            return
        matrix = as_activity_rows(matrix)
        columns: dict[str, Any] = {
            "customer_id": pa.array(customers, pa.string()),
            "event_timestamp": pa.array(as_of_us, pa.timestamp("us", tz="UTC")),
        }
        for j, name in enumerate(ACTIVITY_FIELDS):
            columns[name] = pa.array(matrix[:, j], pa.float64())
        self._parts.append(pa.table(columns))
        self.rows += len(customers)

    def drop(self, customers: set[str]) -> None:
        """Forget the buffered rows of ``customers`` (erased while they were buffered)."""
        keep = pa.array(sorted(customers), pa.string())
        self._parts = [t.filter(pc.invert(pc.is_in(t["customer_id"], keep))) for t in self._parts]
        self.rows = sum(t.num_rows for t in self._parts)

    def flush(self) -> int:
        """Write the buffered rows durably (fsync, then an atomic rename); returns the count."""
        if not self._parts:
            return 0
        write_part(self.folder, pa.concat_tables(self._parts))
        written, self._parts, self.rows = self.rows, [], 0
        return written
