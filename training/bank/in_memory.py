"""A bank held in memory (for tests and the demo), generated whole or read from a bank folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.bank.chunks import Chunk, chunks
from training.bank.contract import contract_events
from training.bank.replay import TimedRecord, records
from training.bank.spec import BankSpec
from training.bank.store import TABLES, plain, write_chunks
from training.bank.summary import Summary


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else pa.table({})


@dataclass
class Bank:
    """A bank held in memory (for tests and the demo): Arrow tables, pandas on demand."""

    spec: BankSpec
    tables: dict[str, pa.Table]
    summary: dict[str, Any]
    _chunks: list[Chunk] | None = None

    @property
    def customers(self) -> pd.DataFrame:
        return self.tables["customers"].to_pandas()

    @property
    def consents(self) -> pd.DataFrame:
        return self.tables["consents"].to_pandas()

    @property
    def events(self) -> pd.DataFrame:
        return self.tables["events"].to_pandas()

    @property
    def outcomes(self) -> pd.DataFrame:
        return self.tables["outcomes"].to_pandas()

    @property
    def truth(self) -> pd.DataFrame:
        return self.tables["truth"].to_pandas()

    def granted(self, purpose: str, channel: str) -> set[str]:
        """Customers whose latest consent entry for (purpose, channel) is a grant."""
        consents = self.consents.sort_values("recorded_at", kind="stable")
        latest = consents.groupby(["customer_id", "purpose", "channel"]).tail(1)
        chosen = latest[(latest["purpose"] == purpose) & (latest["channel"] == channel)]
        return set(chosen[chosen["granted"]]["customer_id"])

    def event_dicts(self) -> list[dict[str, Any]]:
        return list(contract_events(self.tables["events"]))

    def records(self) -> Iterator[TimedRecord]:
        return records(self.tables["events"], self.tables["malformed"])

    def write(self, out: Path) -> dict[str, Any]:
        if self._chunks is None:
            raise ValueError("only a generated bank can be written; this one was read")
        return write_chunks(self.spec, self._chunks, out)

    @classmethod
    def read(cls, folder: Path) -> Bank:
        meta = json.loads((folder / "bank.json").read_text())
        tables = {name: pq.read_table(folder / f"{name}.parquet") for name in TABLES}
        days = sorted((folder / "events").glob("*.parquet"))
        tables["events"] = _concat([pq.read_table(p) for p in days]).sort_by("occurred_at")
        return cls(BankSpec.from_dict(meta["spec"]), tables, meta["summary"])


def generate(spec: BankSpec, workers: int = 1) -> Bank:
    """A whole bank in memory; its events in event-time order."""
    parts = list(chunks(spec, workers))
    summary = Summary(spec)
    for part in parts:
        summary.add(part)
    tables = {name: plain(_concat([getattr(p, name) for p in parts])) for name in TABLES}
    tables["events"] = plain(_concat([p.events for p in parts])).sort_by("occurred_at")
    tables["malformed"] = tables["malformed"].sort_by("occurred_at")
    return Bank(spec, tables, summary.as_dict(), parts)
