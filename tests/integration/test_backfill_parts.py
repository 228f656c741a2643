"""The backfill's written Parquet parts: every row, and a rerun replaces them (the rows
themselves are in tests/unit/test_backfill.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.backfill import write_history
from training.bank.in_memory import generate
from training.bank.spec import BankSpec
from training.trainset import END_OF_DAY


@pytest.fixture(scope="module")
def bank():
    return generate(BankSpec(seed=3, customers=250, days=40))


def test_written_parts_hold_every_row_and_a_rerun_replaces_them(bank, tmp_path: Path) -> None:
    snapshots = [bank.spec.start + timedelta(days=d) - END_OF_DAY for d in (10, 20)]
    rows = write_history(bank.tables["events"], snapshots, tmp_path)
    assert write_history(bank.tables["events"], snapshots, tmp_path) == rows
    parts = sorted(tmp_path.glob("*.parquet"))
    assert len(parts) == 2
    assert sum(pq.read_metadata(p).num_rows for p in parts) == rows
    assert not list(tmp_path.glob(".*"))
