"""What the stream's timers cost for many customers, on a simulated clock (``bench.stream
--timer-customers N``).

The real stream worker (Redis online store and state, its timer index in Redis, the local event
log) first reads one login per customer from the log, so each has a timer at the next midnight.
Then, with the clock standing in the afternoon (nothing due), the worker's own timer loop runs
for some seconds of real time: the checks and watermark publications every second cost this
much whatever happens. Then the clock passes midnight and every timer fires, through the event
path's writes (states, online rows, offline rows), as the worker's loop fires them. The worker
process's CPU and the Redis server's are measured for both, and put on a day: the steady-state
share of a core is the idle cost per second plus one midnight's burst spread over the day's
86,400 seconds.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import redis

from service.bootstrap import Container
from service.settings import load_settings
from service.usecases import pipeline

DAY_S = 86_400


def _settings(home: Path, project: str) -> Any:
    return load_settings(
        {
            "NEXTBEST_HOME": str(home),
            "NEXTBEST_ONLINE_STORE": "redis",
            "NEXTBEST_REDIS_URL": os.environ["TEST_REDIS_URL"],
            "NEXTBEST_FEAST_PROJECT": project,
        }
    )


def _redis_server() -> psutil.Process | None:
    port = str(urlparse(os.environ["TEST_REDIS_URL"]).port)
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "redis-server" in (process.info["name"] or "") and port in cmdline:
            return process
    return None


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def _login(customer: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": f"t-{customer}",
        "customer_id": customer,
        "type": "login",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "channel": "mobile_app",
        "payload": {"method": "password"},
    }


def measure_timers(home: Path, customers: int, idle_seconds: float = 30.0) -> dict[str, Any]:
    project = f"tm{uuid.uuid4().hex[:8]}"
    container = Container(_settings(home / project, project))
    # Yesterday afternoon, so that the events are in the past of the server's clock too.
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = [day + timedelta(hours=9)]
    worker = container.worker(clock=lambda: round(clock[0].timestamp() * 1e6))
    server = _redis_server()
    me = psutil.Process()
    try:
        began = time.perf_counter()
        pipeline.publish_events(
            container,
            (_login(f"T{i:08d}", clock[0] + timedelta(seconds=i % 3600)) for i in range(customers)),
        )
        worker.run(idle_exit_s=1.0)  # every login in, each customer's timer armed
        seeded_s = time.perf_counter() - began
        assert worker.timers is not None
        timers = worker.timers.index.count([0])

        # The afternoon: nothing due; the worker's loop checks and publishes every second.
        clock[0] = day + timedelta(hours=16)
        mine, theirs, began = me.cpu_times(), _cpu(server), time.perf_counter()
        rounds = 0
        while time.perf_counter() - began < idle_seconds:
            worker.timers.caught_up([0])
            rounds += worker.fire_timers()
            worker.timers.publish([0])
            time.sleep(0.05)  # the worker's poll waits about this long when nothing comes
        idle_wall = time.perf_counter() - began
        after = me.cpu_times()
        idle_worker = (after.user + after.system) - (mine.user + mine.system)
        idle_redis = _cpu(server) - theirs

        # Midnight: every timer fires, in the worker's bounded rounds.
        clock[0] = day + timedelta(days=1, seconds=5)
        worker.timers.caught_up([0])
        mine, theirs, began = me.cpu_times(), _cpu(server), time.perf_counter()
        fired = 0
        while n := worker.fire_timers(force=True):
            fired += n
            worker.flush_and_commit()
        burst_wall = time.perf_counter() - began
        after = me.cpu_times()
        burst_worker = (after.user + after.system) - (mine.user + mine.system)
        burst_redis = _cpu(server) - theirs
        rows_now = container.features.read("T00000000")
    finally:
        worker.close()
        _drop(project)
        container.close()

    per_day = {
        "worker_cpu_s": idle_worker / idle_wall * DAY_S + burst_worker,
        "redis_cpu_s": idle_redis / idle_wall * DAY_S + burst_redis,
    }
    return {
        "customers": customers,
        "timers_armed": timers,
        "seed_seconds": round(seeded_s, 1),
        "idle": {
            "seconds": round(idle_wall, 1),
            "timers_fired": rounds,
            "worker_cpu_share_of_a_core": round(idle_worker / idle_wall, 5),
            "redis_cpu_share_of_a_core": round(idle_redis / idle_wall, 5),
        },
        "midnight": {
            "timers_fired": fired,
            "wall_seconds": round(burst_wall, 1),
            "worker_cpu_seconds": round(burst_worker, 1),
            "redis_cpu_seconds": round(burst_redis, 1),
            "worker_cpu_us_per_timer": round(burst_worker / max(fired, 1) * 1e6, 1),
            "row_as_of_after": rows_now.as_of.isoformat() if rows_now.as_of else None,
        },
        "steady_state": {
            "worker_cpu_seconds_per_day": round(per_day["worker_cpu_s"], 1),
            "redis_cpu_seconds_per_day": round(per_day["redis_cpu_s"], 1),
            "share_of_a_core": round((per_day["worker_cpu_s"] + per_day["redis_cpu_s"]) / DAY_S, 5),
            "target_share_of_a_core": 0.10,
        },
    }


def _drop(project: str) -> None:
    """The bench's keys (online rows, states, timers, watermarks): nothing is left behind."""
    client = redis.Redis.from_url(os.environ["TEST_REDIS_URL"])
    try:
        for pattern in (f"*{project}", f"nextbest:{project}*"):
            batch = []
            for key in client.scan_iter(match=pattern, count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    client.delete(*batch)
                    batch = []
            if batch:
                client.delete(*batch)
    finally:
        client.close()
