"""The synthetic bank's files: the same seed writes the same bytes, streamed or in memory,
whatever the parallelism."""

from __future__ import annotations

import hashlib
from pathlib import Path

from training.bank.in_memory import generate
from training.bank.spec import BankSpec
from training.bank.store import write_bank


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_parallelism(tmp_path) -> None:
    spec = BankSpec(seed=5, customers=12_000, days=20, malformed_fraction=0.001)
    one = write_bank(spec, tmp_path / "a", workers=1)
    write_bank(spec, tmp_path / "b", workers=2)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert len(list((tmp_path / "a" / "events").glob("*.parquet"))) >= 20
    other = write_bank(BankSpec(seed=6, customers=12_000, days=20), tmp_path / "c")
    assert (
        digest(tmp_path / "c")["customers.parquet"] != digest(tmp_path / "a")["customers.parquet"]
    )
    assert one["events"] != other["events"]


def test_generate_in_memory_writes_the_same_bytes_as_streaming(tmp_path) -> None:
    spec = BankSpec(seed=9, customers=300, days=15, malformed_fraction=0.01)
    generate(spec).write(tmp_path / "memory")
    write_bank(spec, tmp_path / "streamed")
    assert digest(tmp_path / "memory") == digest(tmp_path / "streamed")
