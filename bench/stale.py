"""Measurement: how many decisions carry ``FEATURES_STALE`` on the demo bank right after
streaming, and how many deliver something.

Sets up the demo's bank (``nextbest demo``'s set-up on the embedded defaults: a bank ending now,
streamed, trained), then decides for 400 customers drawn with a fixed seed from the customer
directory, on the app, through the decision service the API calls. Counts the decisions that
carry ``FEATURES_STALE``, those that deliver anything, and which features were stale.

    python -m bench.stale [--home DIR] [--customers 400]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import emit
from service.bootstrap import Container
from service.entrypoints.demo import run_demo
from service.settings import load_settings
from service.usecases.decision_messages import DecideForCustomer

#: ``nextbest demo``'s defaults.
DEMO = {"customers": 2_000, "days": 120, "seed": 7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="Default: a new temporary one.")
    parser.add_argument("--customers", type=int, default=400, help="Decisions to make.")
    parser.add_argument("--port", type=int, default=18_765)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="nextbest-stale-"))
    home.mkdir(parents=True, exist_ok=True)
    container = Container(load_settings({"NEXTBEST_HOME": str(home)}))
    began = time.monotonic()
    # The demo's set-up, then it serves for no time: what a new user has right after it (its
    # story to stderr: stdout is the benchmark's JSON).
    with contextlib.redirect_stdout(sys.stderr):
        run_demo(container, port=args.port, duration=0.0, started=began, **DEMO)
    set_up_s = time.monotonic() - began
    directory = sorted(pd.read_parquet(home / "bank" / "customers.parquet")["customer_id"])
    chosen = random.Random(19).sample(directory, min(args.customers, len(directory)))
    stale = delivered = 0
    stale_features: Counter[str] = Counter()
    withheld: Counter[str] = Counter()
    for customer in chosen:
        record = container.decisions.decide(DecideForCustomer(customer, "mobile_app")).record
        if "FEATURES_STALE" in record.reason_codes:
            stale += 1
            for candidate in record.candidates:
                if "FEATURES_STALE" in candidate.suppressed_by:
                    withheld[candidate.action_id] += 1
            if record.gate is not None:
                stale_features.update(record.gate.stale)
        delivered += bool(record.delivered)
    result: dict[str, Any] = {
        "benchmark": "stale",
        "bank": DEMO,
        "decisions": len(chosen),
        "features_stale": stale,
        "features_stale_share": round(stale / len(chosen), 4),
        "delivered_anything_share": round(delivered / len(chosen), 4),
        "withheld_for_staleness_by_action": dict(withheld.most_common()),
        "most_often_stale_features": dict(stale_features.most_common(10)),
        "set_up_seconds": round(set_up_s, 1),
    }
    emit(result)


if __name__ == "__main__":
    main()
