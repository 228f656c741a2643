"""Benchmark: the floor under the decision API, i.e. how fast a decision's own I/O can go here.

``bench.decide`` measures the API. This one asks what part of its latency is the decision's
logic and what part the work no design of it can skip on this machine. It serves the same
load from a bare ASGI app (no FastAPI, no request model), with two Gunicorn/Uvicorn workers
and a worker thread per request like the API, doing step by step more of a decision:

- ``bare``: answer on the event loop (HTTP and the generator alone);
- ``thread``: answer from a worker thread (the API's hop off the event loop);
- ``reads``: adds the online feature read (Redis) and the gate's read (PostgreSQL);
- ``audit``: adds one audit append of a real decision record (PostgreSQL). That is a
  decision's I/O in full, with no scoring, rules or record building;
- ``decide``: the whole decision (``DecisionService.decide``), still without FastAPI.

Each step is driven at the same rate by ``bench.decide``'s open-loop generator, on a state kept
by ``python -m bench.decide --keep``. The JSON gives each step's server-side latency, the
API's CPU per request and the CPU of everything else (PostgreSQL, Redis, the generator).

    python -m bench.decide --home /tmp/decide --build-only
    python -m bench.decide_floor --home /tmp/decide --rate 500 --seconds 30
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.api_server import ApiServer
from bench.common import emit
from bench.decide import TARGET_P50_MS, TARGET_P99_MS, run_load
from bench.sampling import machine_load
from bench.state import DECIDERS, Backends, State, environment

if TYPE_CHECKING:
    from service.usecases.decision_messages import DecisionMade

STEPS = ("bare", "thread", "reads", "audit", "decide")
CHANNEL = "mobile_app"
#: Records decided at start-up; the audit step appends copies of them in turn.
TEMPLATES = 64
THREADS = 16  # the API's decision threads per worker
ANSWER = b'{"decision_id":"%s"}'


# --- the served app (imported by each Gunicorn worker) --------------------------------------
class _Worker:
    """One worker's container and the records the audit step appends copies of."""

    def __init__(self) -> None:
        from service.bootstrap import Container
        from service.settings import load_settings
        from service.usecases.decision_messages import DecideForCustomer

        self.step = os.environ["BENCH_FLOOR_STEP"]
        self.command = DecideForCustomer
        self.container = Container(load_settings())
        home = Path(os.environ["NEXTBEST_HOME"])
        customers = json.loads((home / DECIDERS).read_text())[:TEMPLATES]
        self.templates = itertools.cycle([(self._decide(c).record, c) for c in customers])

    def _decide(self, customer_id: str) -> DecisionMade:
        command = self.command(customer_id=customer_id, channel=CHANNEL, limit=3, context={})
        return self.container.decisions.decide(command)

    def work(self, customer_id: str) -> bytes:
        c = self.container
        if self.step == "decide":
            return ANSWER % self._decide(customer_id).record.decision_id.encode()
        if self.step == "thread":
            return ANSWER % b"-"
        now = datetime.now(UTC)
        # The API answers degraded when the online read fails (no personal features): so does this.
        with contextlib.suppress(Exception):
            c.features.read(customer_id)
        c.gate_reads.read(customer_id, now, c.policy.max_contact_lookback_days)
        if self.step == "reads":
            return ANSWER % b"-"
        record, owner = next(self.templates)
        copy = record.model_copy(update={"decision_id": uuid.uuid4().hex, "decided_at": now})
        c.audit.append(copy, owner)
        return ANSWER % copy.decision_id.encode()


_worker: _Worker | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from anyio import CapacityLimiter, to_thread

    global _worker
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            _worker = await to_thread.run_sync(_Worker)
            scope["state"]["limiter"] = CapacityLimiter(THREADS)
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    started = time.perf_counter()
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    assert _worker is not None
    if scope["path"] == "/readyz":
        out = b'{"models":"floor"}'
    elif _worker.step == "bare":
        out = ANSWER % b"-"
    else:
        customer = json.loads(body)["customer_id"]
        limiter = scope["state"]["limiter"]
        out = await to_thread.run_sync(_worker.work, customer, limiter=limiter)
    timing = b"app;dur=%.3f" % ((time.perf_counter() - started) * 1000.0)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(out)),
        (b"server-timing", timing),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": out})


# --- the driver ---------------------------------------------------------------------------
class FloorServer(ApiServer):
    """This module's app, served like the API (Gunicorn master, Uvicorn workers)."""

    step: str = "bare"

    def start(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEXTBEST_")}
        env.update(self.env)
        env["BENCH_FLOOR_STEP"] = self.step
        command = [
            sys.executable, "-m", "gunicorn", "bench.decide_floor:app",
            "--worker-class", "uvicorn_worker.UvicornWorker",
            "--workers", str(self.workers),
            "--bind", f"127.0.0.1:{self.port}",
            "--log-level", "warning",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            root = Path(__file__).parent.parent
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root
            )
        return self._wait_ready()


def measure_step(
    step: str, state: State, backends: Backends, customers: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    log = state.home / f"floor-{step}.log"
    server = FloorServer(environment(state, backends), log, args.workers)
    server.step = step
    try:
        server.start()
        load = run_load(server, "unused", customers, args)
    except BaseException:
        print(server.log(), file=sys.stderr)
        raise
    finally:
        server.stop()
    keep = (
        "rate_achieved", "skipped_at_in_flight_cap", "status_counts", "transport_errors",
        "server_ms", "api_cpu_cores", "api_cpu_ms_per_request", "generator_cpu_cores",
        "other_processes_cpu_cores",
    )  # fmt: skip
    out = {k: load[k] for k in keep}
    latency = load["server_ms"]
    out["meets_latency_target"] = bool(
        latency.get("p50", 1e9) <= TARGET_P50_MS and latency.get("p99", 1e9) <= TARGET_P99_MS
    )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="A state kept by bench.decide.")
    parser.add_argument("--redis-url", default=os.environ.get("TEST_REDIS_URL", ""))
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL") or "sqlite")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", default=",".join(STEPS), help="Comma-separated, in order.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.max_in_flight = args.connections
    unknown = set(args.steps.split(",")) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {sorted(unknown)}; choose from {STEPS}")
    return args


def main() -> None:
    args = parse_args()
    backends = Backends(args.redis_url or None, args.database_url)
    state = State.load(args.home)
    customers: list[str] = json.loads((state.home / DECIDERS).read_text())
    result: dict[str, Any] = {
        "benchmark": "decide_floor",
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "targets": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS},
        "load_before": machine_load(),
        "steps": {},
    }
    for step in args.steps.split(","):
        result["steps"][step] = measure_step(step, state, backends, customers, args)
    result["load_after"] = machine_load()
    emit(result)


if __name__ == "__main__":
    main()
