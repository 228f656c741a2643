"""Benchmark: the audit log's writer, one transaction per append against group commit.

``--threads`` writer threads (in each of ``--processes`` processes, like API workers sharing one
chain) append realistic decision records for ``--seconds``: ten candidates with the policy's
fifteen rule outcomes each, every scoring feature, consents, models and the gate's inputs
(about 15 kB of JSON), for customers
drawn from a pool of 20,000 who already have their pseudonymisation keys (``--cold-keys``: the
first decisions make them). Measures, in the same run, each on a fresh database (a new schema
on PostgreSQL):

- the naive writer (the algorithm before group commit: a transaction per append that reads the
  head, inserts and retries when another writer took that head first);
- group commit (``AuditLog``);
- group commit with signed checkpoints (``--signed``, the default): each process also keeps the
  Merkle tree's edge and publishes a signed checkpoint every 1,000 of its records or 10 s (the
  embedded defaults) to a folder, and once more when it closes; the run then checks that every
  record is covered by a published checkpoint;

decisions/s (median of ``--repeat`` runs), per-append latency p50/p99, the writers' CPU per
decision (what bounds one process under the GIL, whatever else runs on the machine; each run
also records the load average it started at), the mean group size, the speedup, and whether
group commit sustains 2,000 decisions/s on PostgreSQL. Every run's chain is verified, and its
seqs checked to be 1..N with every acknowledged decision present once.

    python -m bench.audit --database-url "$TEST_DATABASE_URL"
    python -m bench.audit --database-url "$TEST_DATABASE_URL" --processes 2
    python -m bench.audit --database-url sqlite --smoke

``--database-url`` defaults to ``TEST_DATABASE_URL``, else ``sqlite`` (a file in a temporary
folder; any SQLite URL means that).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url

from bench.audit_records import CUSTOMERS
from bench.audit_run import run_once
from bench.common import emit, median

#: The issue's requirement for the writer on PostgreSQL.
TARGET_PER_SECOND = 2_000


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "decisions_per_second_runs": [r["decisions_per_second"] for r in runs],
        "decisions_per_second_median": round(median([r["decisions_per_second"] for r in runs])),
        "p50_ms_median": round(median([r["p50_ms"] for r in runs]), 2),
        "p99_ms_median": round(median([r["p99_ms"] for r in runs]), 2),
        "cpu_ms_per_decision_median": round(median([r["cpu_ms_per_decision"] for r in runs]), 3),
        "failed_appends": sum(r["failed_appends"] for r in runs),
        "mean_group_median": median([r["mean_group"] for r in runs]),
        "verified": all(
            r["chain_ok"] and r["seqs_contiguous"] and r["every_acknowledged_decision_logged_once"]
            for r in runs
        ),
        "runs": runs,
    }


def server_settings(url: str) -> dict[str, str]:
    """What a commit costs depends on these; the loopback test server turns durability off."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                name: str(connection.exec_driver_sql(f"show {name}").scalar())
                for name in ("server_version", "fsync", "synchronous_commit")
            }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL") or "sqlite")
    # An API process has many decisions in flight: Little's law (the target rate times an
    # append's latency under load) gives about 16 (Starlette's thread pool allows 40).
    parser.add_argument("--threads", type=int, default=16, help="Writer threads per process.")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Processes, each with its own engine and log, on one chain (like API workers).",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="Per run.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cold-keys",
        action="store_true",
        help="Customers have no pseudonymisation key yet (their first decisions make them).",
    )
    parser.add_argument(
        "--no-signed", action="store_true", help="Leave out the variant with signed checkpoints."
    )
    parser.add_argument("--smoke", action="store_true", help="Tiny runs, to check it works.")
    args = parser.parse_args()
    if args.smoke:
        args.threads, args.seconds, args.repeat = min(args.threads, 4), 0.3, 1

    url = args.database_url
    backend = "sqlite" if url.startswith("sqlite") else make_url(url).get_backend_name()
    result: dict[str, Any] = {
        "benchmark": "audit",
        "backend": backend,
        "processes": args.processes,
        "threads_per_process": args.threads,
        "seconds_per_run": args.seconds,
        "repeat": args.repeat,
        "customers": CUSTOMERS,
        "customer_keys": "made by the first decisions" if args.cold_keys else "existing",
    }
    variants = [("naive", True, False), ("group_commit", False, False)]
    if not args.no_signed:
        variants.append(("group_commit_signed", False, True))
    if backend == "postgresql":
        result["server"] = server_settings(url)
    with tempfile.TemporaryDirectory() as scratch:
        # Interleaved, so the machine's noise falls on every variant alike.
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in variants}
        for _ in range(args.repeat):
            for name, naive, signed in variants:
                runs[name].append(
                    run_once(
                        naive,
                        url,
                        Path(scratch),
                        args.threads,
                        args.seconds,
                        args.cold_keys,
                        args.processes,
                        signed,
                    )
                )
        for name, *_ in variants:
            result[name] = summary(runs[name])
    result["record_bytes"] = result["group_commit"]["runs"][0]["record_bytes"]
    naive_rate = result["naive"]["decisions_per_second_median"]
    group_rate = result["group_commit"]["decisions_per_second_median"]
    result["speedup_vs_naive"] = round(group_rate / naive_rate, 1) if naive_rate else None
    result["target_decisions_per_second"] = TARGET_PER_SECOND
    result["meets_target_on_postgresql"] = (
        group_rate >= TARGET_PER_SECOND if backend == "postgresql" else None
    )
    if "group_commit_signed" in result:
        signed = result["group_commit_signed"]
        signed_rate = signed["decisions_per_second_median"]
        signed["every_record_covered"] = all(
            r["covered"] == r["decisions"] + args.threads * args.processes  # and the warm-ups
            for r in signed["runs"]
        )
        result["signed_vs_unsigned"] = round(signed_rate / group_rate, 2) if group_rate else None
        result["signed_meets_target_on_postgresql"] = (
            signed_rate >= TARGET_PER_SECOND if backend == "postgresql" else None
        )
    emit(result)


if __name__ == "__main__":
    main()
