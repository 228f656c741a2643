"""The benchmarks still run and print the JSON they promise (tiny sizes; no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


def _json_of(*args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(run.stdout)
    return result


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


def test_timers_benchmark_fires_every_timer_and_puts_a_day_on_a_core(redis_url) -> None:
    result = _json_of(
        "bench.stream", "--timer-customers", "300", "--timers-only", "--timer-idle-seconds", "1"
    )
    timers = result["timers"]
    assert timers["timers_armed"] == timers["midnight"]["timers_fired"] == 300
    assert timers["idle"]["timers_fired"] == 0  # nothing is due in the afternoon
    assert timers["midnight"]["row_as_of_after"].endswith("T00:00:00+00:00")
    # CPU times tick in hundredths of a second: a tiny run may measure none at all.
    day = timers["steady_state"]
    assert 0 <= day["share_of_a_core"] < 1
    seconds = day["worker_cpu_seconds_per_day"] + day["redis_cpu_seconds_per_day"]
    assert day["share_of_a_core"] == pytest.approx(seconds / 86_400, abs=1e-4)


def test_audit_benchmark_prints_json_with_the_naive_comparison() -> None:
    result = _json_of("bench.audit", "--database-url", "sqlite", "--smoke", "--threads", "3")
    assert result["benchmark"] == "audit" and result["backend"] == "sqlite"
    for writer in ("naive", "group_commit", "group_commit_signed"):
        assert result[writer]["verified"] is True
        assert result[writer]["decisions_per_second_median"] > 0
        assert result[writer]["p99_ms_median"] >= result[writer]["p50_ms_median"] > 0
    assert result["speedup_vs_naive"] > 0 and result["meets_target_on_postgresql"] is None
    # Every record, the writers' warm-ups too, is covered once the writers have closed.
    assert result["group_commit_signed"]["every_record_covered"] is True
    assert result["signed_vs_unsigned"] > 0


def test_audit_proofs_benchmark_verifies_every_proof_it_times() -> None:
    result = _json_of(
        "bench.audit_proofs", "--database-url", "sqlite", "--records", "3000", "--proofs", "50"
    )
    assert result["benchmark"] == "audit_proofs" and result["rebuild"]["records"] == 3000
    assert result["rebuild"]["tree_bytes_per_record"] == pytest.approx(64, abs=1)
    assert result["inclusion"]["verified"] == 50 and result["consistency"]["verified"] == 5
    assert result["inclusion"]["p99_ms"] >= result["inclusion"]["p50_ms"] > 0
    assert result["naive_rebuild_per_proof"]["proofs"] == 3


def test_decide_benchmark_prints_json_with_the_naive_comparison() -> None:
    # The embedded stores: unit tests need no servers (the real run uses Redis and PostgreSQL).
    result = _json_of("bench.decide", "--smoke", "--redis-url", "", "--database-url", "sqlite")
    assert result["benchmark"] == "decide" and result["smoke"] is True
    assert result["state"]["dropped"] is not None and result["state"]["kept"] is False
    load = result["load"]
    assert load["requests_sent"] > 0 and load["status_counts"].get("200", 0) > 0
    assert load["server_errors_5xx"] == 0 and not load["transport_errors"]
    assert load["latency_source"] and load["server_ms"]["p99"] >= load["server_ms"]["p50"] > 0
    assert load["api_rss_mb"]["max"] > 0 and load["share_with_models_scored"] > 0
    in_process = result["in_process"]
    assert in_process["naive_ms"]["p50"] > 0 and in_process["ours_ms"]["p50"] > 0
    assert result["naive_p50_over_server_p50"] is not None
    assert set(result["meets_target"]) >= {
        "p50_le_target",
        "p99_le_target",
        "rss_le_600mb",
        "decisions_scored",
        "without_features_below_target",
        "all",
    }
    assert result["in_process"]["share_with_scores_kept"] == 1.0  # as the stream leaves them


def test_a_decide_run_scoring_nothing_or_without_features_does_not_meet_the_target() -> None:
    from bench.decide import verdict

    fast = {
        "server_ms": {"p50": 1.0, "p99": 2.0},
        "api_rss_mb": {"pss_max": 300.0},
        "rate_achieved": 500.0,
        "rate_target": 500.0,
        "server_errors_5xx": 0,
        "transport_errors": {},
        "latency_source": "server-timing",
        "share_with_models_scored": 1.0,
    }
    targets = {"p50_ms": 3.0, "p99_ms": 15.0, "without_features_share": 0.001}
    assert verdict(fast, targets)["all"] is True
    # Fast for the wrong reason: the online rows were gone (a restarted Redis under a kept state).
    empty = verdict({**fast, "share_with_models_scored": 0.0}, targets)
    assert empty["decisions_scored"] is False and empty["all"] is False
    # Or answered without features: the online read timed out and its breaker opened.
    blind = verdict({**fast, "share_without_features": 0.01}, targets)
    assert blind["without_features_below_target"] is False and blind["all"] is False
