"""Summaries of what a benchmark measured: latency percentiles, a load run's outcomes, ratios."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.load import Load, Outcome

#: The generator is behind when it sent fewer than this share of the target rate.
ON_SCHEDULE = 0.98


def distribution(values_ms: Sequence[float]) -> dict[str, float | int]:
    if not values_ms:
        return {"count": 0}
    values = np.asarray(values_ms, dtype=float)
    return {
        "count": len(values),
        "p50": round(float(np.percentile(values, 50)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "max": round(float(values.max()), 3),
        "mean": round(float(values.mean()), 3),
    }


def summarise_load(outcomes: list[Outcome], wall_seconds: float, load: Load) -> dict[str, Any]:
    sent = [o for o in outcomes if not o.skipped]
    answered = [o for o in sent if o.status is not None]
    ok = [o for o in answered if o.status == 200]
    timed = [o.server_ms for o in answered if o.server_ms is not None]
    pacing = outcomes[-1].reached - outcomes[0].reached if len(outcomes) > 1 else 0.0
    paced_rate = (len(outcomes) - 1) / pacing if pacing > 0 else 0.0
    statuses = Counter(str(o.status) for o in answered)
    errors = Counter(o.error.split(":")[0] for o in sent if o.error is not None)
    first_errors = [
        {"at_s": round(o.due - outcomes[0].due, 2), "error": o.error[:200]}
        for o in sent
        if o.error is not None
    ][:5]
    return {
        "rate_target": load.rate,
        "seconds": load.seconds,
        "connections": load.connections,
        "requests_due": len(outcomes),
        "requests_sent": len(sent),
        "skipped_at_in_flight_cap": len(outcomes) - len(sent),
        "rate_achieved": round(len(answered) / wall_seconds, 1),
        # The generator's own pace: how fast it got to the requests as they fell due.
        "generator_rate": round(paced_rate, 1),
        "generator_behind": paced_rate < ON_SCHEDULE * load.rate,
        "generator_lag_ms": distribution([o.lag_ms for o in outcomes]),
        "latency_source": "server-timing"
        if timed
        else "client (no Server-Timing header in the responses)",
        "server_timing_coverage": round(len(timed) / max(len(answered), 1), 4),
        "server_ms": distribution(timed or [o.client_ms for o in answered]),
        # Request written to the socket until the response is read.
        "client_ms": distribution([o.client_ms for o in answered]),
        # What a caller sees: also the generator's lag and any wait for a free connection.
        "client_from_schedule_ms": distribution([o.from_schedule_ms for o in answered]),
        "status_counts": dict(sorted(statuses.items())),
        "server_errors_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
        "transport_errors": dict(errors),
        "first_transport_errors": first_errors,
        "share_with_models_scored": _share(ok, "scored"),
        "share_with_reasons": _share(ok, "explained"),
        "share_with_actions": _share(ok, "delivered"),
        "share_without_features": _share(ok, "without_features"),
    }


def _share(outcomes: list[Outcome], flag: str) -> float:
    return round(sum(bool(getattr(o, flag)) for o in outcomes) / max(len(outcomes), 1), 4)


def ratio(
    top: Mapping[str, float | int], bottom: Mapping[str, float | int], key: str
) -> float | None:
    if key not in top or key not in bottom or not bottom[key]:
        return None
    return round(float(top[key]) / float(bottom[key]), 2)
