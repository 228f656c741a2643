"""Benchmark: ``nextbest simulate`` at the issue's size, and its history loaded two ways.

Runs the closed loop (``service/usecases/simulation.py``) on the embedded defaults in a folder of
its own, as ``nextbest simulate`` does: 20,000 customers, 120 days of history, 90 simulated days,
retraining every 30, under a compliance policy whose universal control group is large enough to
measure each action (``--universal-share``; the packaged 2% measures the programme over months,
not each action in one quarter). Reports the wall time of each phase (building the world, loading
the history, training, the days, each retraining), the day's median, and the lift measured from
the control groups held to the world's truth (``simulation_truth.py``): the share of actions with
volume whose 90% interval holds the true number of conversions caused.

Beside it, in the same run, the history of a smaller bank (``--compare-customers``) loaded both
ways: seeded from the archive (ours) and published through the stream worker (the naive way,
as the simulation did before), with the seconds of each and their ratio.

    eval "$(scripts/services env)"                 # Redis for the online features (TEST_REDIS_URL)
    python -m bench.simulate                       # the full size
    python -m bench.simulate --policy oracle       # another targeting policy, same bank
    python -m bench.simulate --smoke               # tiny, to check it works
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import PeakMemory, emit
from consent.rules.documents import load_rules_yaml
from service.adapters.lift_page import page
from service.adapters.stream_stores import drop_redis_project
from service.bootstrap import Container
from service.settings import load_settings
from service.usecases.simulation import Plan, Simulation
from service.usecases.simulation_policies import POLICIES
from service.usecases.simulation_truth import coverage

#: The issue's target for 20,000 customers × 90 days.
TARGET_SECONDS = 30 * 60


def policy_with_share(share: float, folder: Path) -> Path:
    """The packaged compliance policy with its universal control group at ``share``."""
    policy = load_rules_yaml(None, "policy.yaml")
    (rule,) = [r for r in policy["rules"] if r["id"] == "control.universal"]
    rule["params"]["share"] = share
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def container_in(
    folder: Path, policy_file: Path, redis_url: str, stream_workers: int = 1
) -> Container:
    """The simulation's container: everything in ``folder``, the online features and the
    stream's state in Redis under a Feast project of its own when ``redis_url`` is given, the
    event log in a partition per stream worker."""
    environ = {
        "NEXTBEST_HOME": str(folder / "home"),
        "NEXTBEST_POLICY_FILE": str(policy_file),
        "NEXTBEST_LOCAL_PARTITIONS": str(stream_workers),
    }
    if redis_url:
        environ |= {
            "NEXTBEST_ONLINE_STORE": "redis",
            "NEXTBEST_REDIS_URL": redis_url,
            "NEXTBEST_FEAST_PROJECT": f"bench_simulate_{secrets.token_hex(4)}",
        }
    return Container(load_settings(environ))


def close(container: Container) -> None:
    settings = container.settings
    container.close()
    if settings.online_store == "redis":
        drop_redis_project(settings.redis_url, settings.feast_project)


def history_both_ways(args: argparse.Namespace, scratch: Path, policy: Path) -> dict[str, Any]:
    """The same small bank's set-up, seeded then streamed, in separate folders."""
    seconds: dict[str, float] = {}
    for way in ("seed", "stream"):
        folder = scratch / f"history-{way}"
        container = container_in(folder, policy, args.redis_url, args.stream_workers)
        try:
            plan = Plan(
                args.compare_customers,
                days=1,
                history_days=args.history_days,
                seed=args.seed,
                history="seed" if way == "seed" else "stream",
                retrain_every_days=None,
            )
            simulation = Simulation(container, plan, folder / "bank")
            simulation.set_up()
            seconds[way] = simulation.timings["history"]
        finally:
            close(container)
    return {
        "customers": args.compare_customers,
        "history_days": args.history_days,
        "ours_seeded_seconds": round(seconds["seed"], 2),
        "naive_streamed_seconds": round(seconds["stream"], 2),
        "naive_over_ours": round(seconds["stream"] / seconds["seed"], 1),
    }


def full_run(args: argparse.Namespace, scratch: Path, policy: Path) -> dict[str, Any]:
    folder = scratch / "full"
    container = container_in(folder, policy, args.redis_url, args.stream_workers)
    plan = Plan(
        args.customers,
        args.days,
        args.history_days,
        args.seed,
        args.policy,
        args.contacts_per_day,
        retrain_every_days=args.retrain_every_days or None,
    )
    began = time.perf_counter()
    try:
        simulation = Simulation(container, plan, folder / "bank")
        with PeakMemory() as memory:
            simulation.set_up()
            set_up = time.perf_counter() - began
            simulation.run()
        total = time.perf_counter() - began
        summary = simulation.summary()
        held = coverage(simulation)
        if args.html is not None:
            args.html.write_text(page(held.report), encoding="utf-8")
    finally:
        close(container)
    day_seconds = [d["seconds"] for d in summary["days"]]
    return {
        "plan": summary["plan"],
        "seconds": {
            **summary["seconds"],
            "set_up": round(set_up, 1),
            "days": round(sum(day_seconds), 1),
            "day_median": round(statistics.median(day_seconds), 2),
            "day_max": round(max(day_seconds), 2),
            "retrainings": [r["seconds"] for r in summary["retrainings"]],
            "total": round(total, 1),
        },
        "peak_rss_mb": memory.peak_mb,
        "meets_target": total <= args.target_seconds,
        "target_seconds": args.target_seconds,
        "totals": summary["totals"],
        "retrainings": summary["retrainings"],
        "models": {
            need: {"test_roc_auc": e.get("roc_auc"), "oracle_roc_auc": e.get("oracle_roc_auc")}
            for need, e in simulation.trained.evaluations.items()
        },
        "lift": held.as_dict(),
        "days": summary["days"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--history-days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policy", choices=POLICIES, default="propensity")
    parser.add_argument("--contacts-per-day", type=int, default=None)
    parser.add_argument("--retrain-every-days", type=int, default=30)
    parser.add_argument("--universal-share", type=float, default=0.3)
    parser.add_argument("--compare-customers", type=int, default=2_000)
    parser.add_argument("--no-compare", action="store_true", help="Skip the history comparison.")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TEST_REDIS_URL", ""),
        help="Online features and stream state in this Redis (default TEST_REDIS_URL, from "
        "scripts/services env); empty: the embedded SQLite files.",
    )
    parser.add_argument(
        "--html", type=Path, default=None, help="Write the run's lift page (its plots) here."
    )
    parser.add_argument(
        "--stream-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Stream worker processes, one per partition of the event log (default: one per "
        "core, as a bank would run them).",
    )
    parser.add_argument("--target-seconds", type=float, default=TARGET_SECONDS)
    parser.add_argument("--smoke", action="store_true", help="Tiny, to check it works.")
    args = parser.parse_args()
    if args.smoke:
        args.customers, args.days, args.compare_customers = 400, 3, 300
        args.retrain_every_days = 2
    with tempfile.TemporaryDirectory(prefix="nextbest-bench-simulate-") as temporary:
        scratch = Path(temporary)
        policy = policy_with_share(args.universal_share, scratch)
        result: dict[str, Any] = {
            "benchmark": "simulate",
            "smoke": args.smoke,
            "universal_share": args.universal_share,
            "online_store": "redis" if args.redis_url else "sqlite",
            "stream_workers": args.stream_workers,
        }
        if not args.no_compare:
            result["history"] = history_both_ways(args, scratch, policy)
        result |= full_run(args, scratch, policy)
    emit(result)


if __name__ == "__main__":
    main()
