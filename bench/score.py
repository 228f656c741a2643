"""Benchmark: batch scoring every profiled customer for all seven needs (outbound campaigns).

Needs a state folder with a trained bank (``python -m bench.train --home DIR`` keeps one, or
``nextbest train`` in it). Measures, in the same run:

- the features of every customer with profiling consent, joined point-in-time through Feast;
- ``score_matrix``: one vectorised ``predict`` per need over all customers (median of repeats);
- the naive way: a loop over customers, one ``predict`` per customer and need;
- ``nextbest score`` end to end (consents, join, scoring, Parquet).

    python -m bench.score --home /tmp/state --alias bench
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PeakMemory, emit, median
from service.bootstrap import Container
from service.settings import load_settings
from service.usecases.scoring import batch_score, features_at, score_matrix
from training.bank.spec import BankSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--alias", default="champion", help="Registry alias to score with.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--naive-customers", type=int, default=2_000)
    args = parser.parse_args()

    container = Container(
        load_settings({"NEXTBEST_HOME": str(args.home), "NEXTBEST_MODEL_ALIAS": args.alias})
    )
    models = container.models.snapshot()
    spec = BankSpec.from_dict(json.loads((args.home / "bank" / "bank.json").read_text())["spec"])
    at = spec.end
    result: dict[str, Any] = {"benchmark": "score", "needs": sorted(models)}
    with PeakMemory() as memory:
        began = time.perf_counter()
        frame = features_at(container, at)
        result["customers"] = len(frame)
        result["feature_join_seconds"] = round(time.perf_counter() - began, 2)

        runs = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            scores = score_matrix(models, frame)
            runs.append(time.perf_counter() - began)
        result["score_seconds_runs"] = [round(r, 3) for r in runs]
        result["score_seconds_median"] = round(median(runs), 3)
        result["customers_per_second"] = round(len(frame) / median(runs))

        sample = frame.head(args.naive_customers)
        rows = [
            {name: row[name] for name in models[next(iter(models))].features}
            for row in sample.to_dict("records")
        ]
        began = time.perf_counter()
        naive: dict[str, list[float]] = {need: [] for need in models}
        for values in rows:
            for need, model in models.items():
                matrix = np.array([[values.get(f, np.nan) for f in model.features]], dtype=float)
                naive[need].append(float(model.predict(matrix)[0]))
        naive_seconds = time.perf_counter() - began
        result["naive_customers"] = len(rows)
        result["naive_customers_per_second"] = round(len(rows) / naive_seconds)
        result["speedup_vs_naive"] = round(
            result["customers_per_second"] / result["naive_customers_per_second"], 1
        )
        head = scores.head(len(rows))
        for need in models:
            assert np.allclose(head[f"score_{need}"].to_numpy(), naive[need]), need

        with tempfile.TemporaryDirectory() as scratch:
            began = time.perf_counter()
            batch_score(container, Path(scratch) / "scores.parquet", at)
            result["nextbest_score_seconds"] = round(time.perf_counter() - began, 2)
    result["peak_memory_mb"] = memory.peak_mb
    emit(result)


if __name__ == "__main__":
    main()
