"""The stream seeded from an archive (``nextbest backfill --seed-stream``): seeding the first
days of a bank and streaming the rest leaves the worker's states, timers and online features
exactly as streaming the whole bank does, on the embedded defaults."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from feature_repo.arrival import epoch_micros
from feature_repo.buckets import WindowState
from feature_repo.windows import compute_features
from service.bootstrap import Container
from service.entrypoints.cli import main
from service.usecases import pipeline
from tests.conftest import make_settings
from training.bank.contract import contract_events
from training.bank.in_memory import generate
from training.bank.spec import BankSpec

#: The last days are short, so some customers have no event after the cut: only their timers
#: move them on.
DAYS, CUT = 40, 38


@pytest.fixture(scope="module")
def bank():
    return generate(BankSpec(seed=11, customers=120, days=DAYS))


def _archive(bank, folder: Path) -> Path:
    """The bank as written up to the cut: its first days' event files, its span ending there."""
    bank.write(folder)
    cut = bank.spec.start + timedelta(days=CUT)
    for path in (folder / "events").glob("*.parquet"):
        if path.stem >= cut.date().isoformat():
            path.unlink()
    meta = json.loads((folder / "bank.json").read_text())
    meta["spec"].update(days=CUT, end=cut.isoformat())
    (folder / "bank.json").write_text(json.dumps(meta))
    return folder


def _states(container: Container, customers: list[str]) -> dict[str, WindowState]:
    blobs = container.state_store().get_many(customers)
    return {c: WindowState.from_bytes(b) for c, b in zip(customers, blobs, strict=True) if b}


def test_seeded_then_streamed_equals_streamed_throughout(bank, tmp_path: Path) -> None:
    end_us = epoch_micros(bank.spec.end)
    cut = bank.spec.start + timedelta(days=CUT)
    events = bank.tables["events"]
    after = events.filter(pc.greater_equal(events["occurred_at"], cut))

    streamed = Container(make_settings(tmp_path / "streamed"))
    seeded = Container(make_settings(tmp_path / "seeded"))
    try:
        pipeline.publish_events(streamed, contract_events(events))
        pipeline.stream_until_idle(streamed, idle_s=0.3, clock=lambda: end_us)

        folder = _archive(bank, tmp_path / "archive")
        done = pipeline.seed_stream(seeded, folder)
        assert done.customers > 100 and 0 < done.timers <= done.customers
        pipeline.publish_events(seeded, contract_events(after))
        pipeline.stream_until_idle(seeded, idle_s=0.3, clock=lambda: end_us)

        ids = sorted(set(bank.customers["customer_id"]))
        ours, theirs = _states(seeded, ids), _states(streamed, ids)
        assert sorted(ours) == sorted(theirs) and len(ours) > 100
        order = sorted(ours)
        assert compute_features([ours[c] for c in order]) == pytest.approx(
            compute_features([theirs[c] for c in order]), rel=1e-12, abs=1e-9
        )
        quiet = set(order) - set(after["customer_id"].to_pylist())
        assert quiet and all(ours[c].row_time_us == end_us for c in quiet)
        for c in order:
            assert ours[c].row_time_us == theirs[c].row_time_us
            assert ours[c].next_change_us() == theirs[c].next_change_us()
        assert seeded.timer_index().count([0]) == streamed.timer_index().count([0])
        for c in order[:: len(order) // 20]:
            mine, stream = seeded.features.read(c), streamed.features.read(c)
            known = {k: v for k, v in stream.values.items() if v is not None}
            assert {k for k, v in mine.values.items() if v is not None} == set(known)
            assert {k: mine.values[k] for k in known} == pytest.approx(known, abs=1e-9)
            assert (mine.as_of, mine.valid_until) == (stream.as_of, stream.valid_until)
    finally:
        streamed.close()
        seeded.close()


def test_the_cli_backfills_and_seeds(bank, tmp_path: Path) -> None:
    folder = _archive(bank, tmp_path / "archive")
    result = CliRunner().invoke(
        main,
        ["backfill", "--bank", str(folder), "--step-days", "7", "--seed-stream"],
        env={"NEXTBEST_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    done = json.loads(result.output.strip().splitlines()[-1])
    assert done["rows"] > 0 and done["seeded_customers"] > 100
    assert 0 < done["seeded_timers"] <= done["seeded_customers"]
