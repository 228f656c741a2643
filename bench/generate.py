"""Benchmark: generating the synthetic bank.

Measures ``write_bank`` (vectorised, chunked, parallel) on a large bank and, in the same run, the
naive way of doing the same kind of work — a per-customer, per-day Python loop building event
dictionaries and writing them with pandas — on a slice of customers, and reports both rates and
their ratio. Peak memory is sampled over the whole process tree.

    python -m bench.generate --customers 100000 --days 90
    python -m bench.generate --customers 1000000 --days 90 --naive-customers 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import PeakMemory, emit, median, timed
from training.bank.spec import BankSpec
from training.bank.store import write_bank


def naive_bank(customers: int, days: int, seed: int, out: Path) -> int:
    """What a first attempt looks like: loop over customers and days, one dict per event."""
    rng = np.random.default_rng(seed)
    spec = BankSpec(customers=customers, days=days)
    start = spec.start
    events = []
    for c in range(customers):
        customer_id = f"C{c + 1:07d}"
        income = float(rng.lognormal(10.9, 0.65))
        salary_day = int(rng.integers(1, 29))
        for d in range(days):
            day = start + timedelta(days=d)
            if day.day == salary_day:
                events.append(
                    {
                        "event_id": str(uuid.uuid4()),
                        "customer_id": customer_id,
                        "type": "transaction",
                        "occurred_at": day + timedelta(hours=9),
                        "channel": "core_banking",
                        "payload": json.dumps(
                            {
                                "amount": f"{income / 12:.2f}",
                                "currency": "CNY",
                                "direction": "credit",
                                "category": "salary",
                            }
                        ),
                    }
                )
            for kind, rate in (("card", 0.9), ("login", 0.5), ("page", 0.12), ("transfer", 0.13)):
                for _ in range(rng.poisson(rate)):
                    moment = day + timedelta(seconds=int(rng.integers(0, 86_400)))
                    if kind == "login":
                        payload: dict[str, object] = {"method": "password"}
                    elif kind == "page":
                        payload = {"page": "home", "seconds": float(rng.lognormal(4, 0.8))}
                    else:
                        payload = {
                            "amount": f"{rng.lognormal(4.5, 1.0):.2f}",
                            "currency": "CNY",
                            "direction": "debit",
                            "category": "card_purchase",
                        }
                    events.append(
                        {
                            "event_id": str(uuid.uuid4()),
                            "customer_id": customer_id,
                            "type": "transaction" if kind in ("card", "transfer") else kind,
                            "occurred_at": moment,
                            "channel": "mobile_app",
                            "payload": json.dumps(payload),
                        }
                    )
    frame = pd.DataFrame(events).sort_values("occurred_at")
    frame.to_parquet(out / "events.parquet", index=False)
    return len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="Runs of the fast path (median).")
    parser.add_argument(
        "--naive-customers",
        type=int,
        default=2_000,
        help="Customers for the naive baseline (0: skip it).",
    )
    parser.add_argument("--out", type=Path, default=None, help="Keep the bank here.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nextbest-bench-"))
    try:
        times, peaks = [], []
        for _ in range(args.repeat):
            target = args.out or work / "bank"
            shutil.rmtree(target, ignore_errors=True)
            spec = BankSpec(customers=args.customers, days=args.days)
            with PeakMemory() as memory:
                seconds, summary = timed(write_bank, spec, target, workers=args.workers)
            times.append(seconds)
            peaks.append(memory.peak_mb)
        disk = sum(p.stat().st_size for p in (args.out or work / "bank").rglob("*") if p.is_file())
        fast_rate = summary["events"] / median(times)
        result = {
            "benchmark": "generate",
            "customers": args.customers,
            "days": args.days,
            "workers": args.workers,
            "events": summary["events"],
            "seconds_median": round(median(times), 2),
            "seconds_all": [round(t, 2) for t in times],
            "events_per_second": round(fast_rate),
            "peak_memory_mb_process_tree": max(peaks),
            "disk_mb": round(disk / 2**20, 1),
            "monthly_base_rate_by_need": summary["monthly_base_rate_by_need"],
            "oracle_roc_auc_by_need": summary["oracle_roc_auc_by_need"],
            "events_by_type": summary["events_by_type"],
        }
        if args.naive_customers:
            naive_dir = work / "naive"
            naive_dir.mkdir()
            seconds, count = timed(naive_bank, args.naive_customers, args.days, 7, naive_dir)
            naive_rate = count / seconds
            result["naive"] = {
                "customers": args.naive_customers,
                "events": count,
                "seconds": round(seconds, 2),
                "events_per_second": round(naive_rate),
            }
            result["speedup_vs_naive"] = round(fast_rate / naive_rate, 1)
        emit(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
