"""How a bank is stored: the layout of a bank folder, and writing one chunk by chunk.

Layout of a bank folder::

    bank.json            the spec and a summary (counts, base rates, oracle AUC per need)
    customers.parquet    profiles              consents.parquet   consent history
    outcomes.parquet     applications and openings per need
    truth.parquet        true propensity and realised label per customer, snapshot and need
    malformed.parquet    deliberately broken raw events (for the dead-letter path)
    events/YYYY-MM-DD.parquet   the events of each UTC day, one row group per customer chunk
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.bank.chunks import Chunk, chunks
from training.bank.spec import BankSpec
from training.bank.summary import Summary

TABLES = ("customers", "consents", "outcomes", "truth", "malformed")


def plain(table: pa.Table) -> pa.Table:
    """The table with dictionary columns decoded, as a reader of the Parquet files sees it."""
    fields = [
        pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


class _Writers:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.open: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, table: pa.Table) -> None:
        writer = self.open.get(name)
        if writer is None:
            path = self.out / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self.open[name] = pq.ParquetWriter(
                path, plain(table).schema, compression="zstd", store_schema=False
            )
        writer.write_table(plain(table))

    def close(self) -> None:
        for writer in self.open.values():
            writer.close()


def write_chunks(spec: BankSpec, parts: Iterable[Chunk], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    writers = _Writers(out)
    summary = Summary(spec)
    try:
        for chunk in parts:
            for name in TABLES:
                writers.write(name, getattr(chunk, name))
            events = chunk.events
            day = pc.cast(events["occurred_at"], pa.int64()).to_numpy() // 86_400_000_000
            bounds = np.flatnonzero(np.diff(day)) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(day)], strict=True):
                date = pd.Timestamp(int(day[lo]) * 86_400, unit="s").strftime("%Y-%m-%d")
                writers.write(f"events/{date}", events.slice(lo, hi - lo))
            summary.add(chunk)
    finally:
        writers.close()
    report = summary.as_dict()
    (out / "bank.json").write_text(
        json.dumps({"spec": spec.as_dict(), "summary": report}, indent=2)
    )
    return report


def write_bank(spec: BankSpec, out: Path, workers: int = 1) -> dict[str, Any]:
    """Generate and write a bank of any size, one chunk of customers at a time."""
    return write_chunks(spec, chunks(spec, workers), out)
