"""docs/performance.md is what bench.report makes of docs/benchmarks/*.json, so it cannot drift."""

import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from bench.common import recorded
from bench.report import REPORT, RESULTS, load, render
from bench.report_kinds import KINDS

ROOT = Path(__file__).parents[2]


def test_performance_md_is_generated_from_the_benchmark_results() -> None:
    assert REPORT.read_text() == render(load(RESULTS)), (
        "docs/performance.md differs from the benchmark JSON: run `python -m bench.report`"
    )


def test_every_benchmark_result_has_a_row_linking_its_file() -> None:
    text = REPORT.read_text()
    for name in load(RESULTS):
        assert f"[{name}](benchmarks/{name})" in text


def test_a_result_shows_ours_the_naive_way_and_their_ratio_with_what_it_records() -> None:
    result = {
        "benchmark": "score",
        "customers": 81206,
        "score_seconds_median": 0.5,
        "customers_per_second": 162412,
        "naive_customers_per_second": 1000,
        "speedup_vs_naive": 162.4,
        "recorded": {
            "at": "2027-01-02T03:04:05+00:00",
            "commit": "abcdef0123456789",
            "dirty": True,
        },
        "machine": {"cpus": 4, "python": "3.11.9", "platform": "Linux-x"},
    }
    text = render({"score-2026-11-29.json": result})
    row = next(line for line in text.splitlines() if line.startswith("| [score-"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "2027-01-02, abcdef0123 (uncommitted changes)"  # the JSON's, not the name's
    assert cells[2:7] == ["81,206", "0.5 s", "162,412", "1,000", "162.4×"]
    assert "—" in cells  # no peak memory recorded
    assert "## Batch scoring" in text and "## The decision API" not in text
    assert "4 CPUs, Python 3.11.9, Linux-x" in text


def test_a_result_without_a_record_takes_the_date_of_its_file_name() -> None:
    result = {"benchmark": "stream", "events_in_topic": 10, "speedup_vs_naive": 3.0}
    row = next(
        line
        for line in render({"stream-2026-11-29.json": result}).splitlines()
        if line.startswith("| [stream-")
    )
    assert row.split("|")[2].strip() == "2026-11-29"


def test_a_benchmark_kind_without_a_report_is_refused_not_left_out() -> None:
    with pytest.raises(ValueError, match=r"new-2026\.json"):
        render({"new-2026.json": {"benchmark": "something new"}})
    assert set(KINDS) >= {r["benchmark"] for r in load(RESULTS).values()}


def test_results_record_when_and_from_which_commit_they_were_measured() -> None:
    stamp = recorded()
    assert datetime.fromisoformat(stamp["at"]).utcoffset() is not None
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert stamp["commit"] == head and isinstance(stamp["dirty"], bool)
