"""The benchmarks still run and print the JSON they promise (tiny sizes; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_generate_benchmark_prints_json_with_the_naive_comparison() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.generate",
            "--customers",
            "300",
            "--days",
            "10",
            "--naive-customers",
            "50",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(run.stdout)
    assert result["benchmark"] == "generate" and result["customers"] == 300
    assert result["events"] > 0 and result["naive"]["events"] > 0
    assert result["speedup_vs_naive"] > 0 and result["peak_memory_mb_process_tree"] > 0


def _json_of(*args: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(run.stdout)


def test_train_and_score_benchmarks_print_json_with_the_naive_comparison(tmp_path) -> None:
    home = str(tmp_path / "state")
    trained = _json_of("bench.train", "--customers", "1500", "--days", "200", "--home", home)
    assert trained["benchmark"] == "train" and trained["rows"] > 10_000
    assert set(trained["test"]) <= set(trained["needs"]) and trained["speedup_vs_naive"] > 0
    scored = _json_of(
        *("bench.score", "--home", home, "--alias", "bench"),
        *("--repeat", "2", "--naive-customers", "100"),
    )
    assert scored["benchmark"] == "score" and scored["customers"] > 1000
    assert scored["customers_per_second"] > 0 and scored["naive_customers_per_second"] > 0


def test_audit_benchmark_prints_json_with_the_naive_comparison() -> None:
    result = _json_of("bench.audit", "--database-url", "sqlite", "--smoke", "--threads", "3")
    assert result["benchmark"] == "audit" and result["backend"] == "sqlite"
    for writer in ("naive", "group_commit"):
        assert result[writer]["verified"] is True
        assert result[writer]["decisions_per_second_median"] > 0
        assert result[writer]["p99_ms_median"] >= result[writer]["p50_ms_median"] > 0
    assert result["speedup_vs_naive"] > 0 and result["meets_target_on_postgresql"] is None
