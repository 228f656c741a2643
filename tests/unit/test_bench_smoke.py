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
