"""Benchmark: the real-time decision API under load, against the naive feature + model path.

Builds a state folder with the project's own pipeline (synthetic bank → consents, customer
directory and profiles → offline history by backfill → the latest feature rows online → seven
need models trained and registered in MLflow), starts the real API as its own processes
(``nextbest serve --workers N``: Gunicorn with Uvicorn workers) on the Redis online store and
a fresh PostgreSQL schema, and drives it open-loop: ``POST /v1/decisions`` at a fixed rate for
a fixed time, each request sent when its time comes whatever the earlier ones are doing, over
a bounded pool of keep-alive HTTP/1.1 connections, for customers who agreed to be profiled and
contacted on the app (so most decisions score every model, each with its explanation).
Measures, in the same run:

- latency server-side (the ``Server-Timing: app;dur=`` header; client-side if it is missing,
  said in ``latency_source``) and client-side: p50/p90/p99/max;
- achieved throughput, whether the generator kept its schedule, status codes (every 5xx),
  the share of decisions that scored models and gave reasons;
- the API process's resident memory (sampled) and CPU;
- in this process, one request after another for the same kind of customers, the feature and
  model part of a decision two ways: the naive one (``FeatureStore.get_online_features`` per
  request, then per need one ``Booster.predict`` and one ``pred_contrib``) and ours
  (``FeastFeatures.read`` + ``NeedModel.score`` per need); the naive p50/p99 over the
  server's is the ratio the issue asks for.

    python -m bench.decide                                      # temporary state, dropped after
    python -m bench.decide --home /tmp/decide --keep            # build and keep a state
    python -m bench.decide --home /tmp/decide --reuse --keep    # run on it again
    python -m bench.decide --smoke                              # tiny, to check it works

``--redis-url`` and ``--database-url`` default to ``TEST_REDIS_URL`` and ``TEST_DATABASE_URL``
(``scripts/services env``); an empty Redis URL means the embedded SQLite online store, and
``sqlite`` the embedded operational store. Without ``--keep``, the PostgreSQL schema and the
online rows are dropped at the end, even on failure. Building in a ``--home`` that holds a kept
state drops that state first.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import redis
import uvloop
from sqlalchemy import create_engine, make_url, text

from bench.common import emit
from bench.http import Client
from consent.rules.vocabulary import NEEDS
from feature_repo.activity import FEATURE_NAMES
from feature_repo.definitions import ACTIVITY_SERVICE
from service.adapters.models import NeedModel
from service.bootstrap import Container
from service.entrypoints.auth import DEV_KEYS_FILE, development_keys, plain_key
from service.settings import load_settings
from service.usecases import pipeline
from training.backfill import history
from training.bank import BankSpec, write_bank

#: The issue's done-when, server-side, explanations included.
TARGET_P50_MS = 3.0
TARGET_P99_MS = 15.0
TARGET_RSS_MB = 600.0
CHANNEL = "mobile_app"
#: Loading Feast, MLflow and seven boosters takes a while on a busy machine.
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
#: A request this slow is an error, not a latency: the run would be meaningless anyway.
REQUEST_TIMEOUT_S = 10.0
RSS_PERIOD_S = 0.25
#: The generator is behind when it sent fewer than this share of the target rate.
ON_SCHEDULE = 0.98
#: The bench's customers agreed to profiling: nearly every decision scores the models.
MIN_SCORED_SHARE = 0.95
MANIFEST = "bench-decide.json"
DECIDERS = "decision-customers.json"


# --- state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """Where a benchmark state lives; written to ``<home>/bench-decide.json`` once complete."""

    home: Path
    project: str
    schema: str | None  # None: the embedded SQLite operational store
    online_store: str  # "redis" or "sqlite"
    customers: int = 0
    days: int = 0

    @property
    def manifest(self) -> Path:
        return self.home / MANIFEST

    def save(self) -> None:
        document = {k: v for k, v in asdict(self).items() if k != "home"}
        self.manifest.write_text(json.dumps(document, indent=2))

    @classmethod
    def load(cls, home: Path) -> State:
        path = home / MANIFEST
        if not path.exists():
            raise SystemExit(f"{home} holds no complete benchmark state (built with --keep?)")
        return cls(home=home, **json.loads(path.read_text()))


@dataclass(frozen=True)
class Backends:
    redis_url: str | None
    database_url: str  # "sqlite" or a PostgreSQL URL with rights to create schemas

    @property
    def postgres(self) -> bool:
        return not self.database_url.startswith("sqlite")


def scoped_url(url: str, schema: str) -> str:
    """``url`` with every connection's search path set to ``schema``."""
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


def environment(state: State, backends: Backends, log_level: str = "WARNING") -> dict[str, str]:
    """The ``NEXTBEST_*`` settings of the state, for this process and the API's."""
    env = {
        "NEXTBEST_HOME": str(state.home),
        "NEXTBEST_FEAST_PROJECT": state.project,
        "NEXTBEST_ONLINE_STORE": state.online_store,
        "NEXTBEST_LOG_LEVEL": log_level,
    }
    if state.online_store == "redis" and backends.redis_url:
        env["NEXTBEST_REDIS_URL"] = backends.redis_url
    if state.schema is not None:
        env["NEXTBEST_DATABASE_URL"] = scoped_url(backends.database_url, state.schema)
    return env


def _admin(url: str, statement: str) -> None:
    """One statement on its own short-lived engine (creating or dropping the run's schema)."""
    admin = create_engine(url)
    try:
        with admin.begin() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def new_state(home: Path, backends: Backends, customers: int, days: int) -> State:
    """A state with its own Feast project and, on PostgreSQL, its own empty schema."""
    tag = uuid.uuid4().hex[:10]
    schema = None
    if backends.postgres:
        schema = f"bench_decide_{tag}"
        _admin(backends.database_url, f"create schema {schema}")
    online = "redis" if backends.redis_url else "sqlite"
    return State(home, f"bench_decide_{tag}", schema, online, customers, days)


def drop_state(state: State, backends: Backends) -> dict[str, Any]:
    """Drop the schema and the Feast project's online rows (everything else is in the home)."""
    dropped: dict[str, Any] = {}
    if state.schema is not None:
        _admin(backends.database_url, f"drop schema if exists {state.schema} cascade")
        dropped["schema"] = state.schema
    if state.online_store == "redis" and backends.redis_url:
        # Feast's Redis keys end with the project name, unique to this state.
        client = redis.Redis.from_url(backends.redis_url)
        try:
            keys = list(client.scan_iter(match=f"*{state.project}".encode(), count=10_000))
            for start in range(0, len(keys), 10_000):
                client.delete(*keys[start : start + 10_000])
        finally:
            client.close()
        dropped["online_keys"] = len(keys)
    return dropped


def replace_state(home: Path, backends: Backends) -> dict[str, Any] | None:
    """Drop the state kept in ``home``, if any, before a new one is built there: its schema and
    online rows live outside the folder, and nothing would refer to them again (they would pile
    up on the servers, build after build)."""
    if not (home / MANIFEST).exists():
        return None
    old = State.load(home)
    if (old.schema is not None and not backends.postgres) or (
        old.online_store == "redis" and not backends.redis_url
    ):
        raise SystemExit(
            f"{home} holds a state built on other backends: build again with its "
            "--redis-url/--database-url (it is dropped first), or use another --home"
        )
    dropped = drop_state(old, backends)
    old.manifest.unlink()
    return dropped


def consenting(consents: pd.DataFrame) -> set[str]:
    """Customers whose latest choices grant profiling and marketing on the channel (the
    registry's rule: the entry recorded last wins)."""
    latest = consents.sort_values("recorded_at", kind="stable")
    latest = latest.groupby(["customer_id", "purpose", "channel"]).tail(1)
    granted = latest[latest["granted"]]

    def who(purpose: str, channel: str) -> set[str]:
        chosen = granted[(granted["purpose"] == purpose) & (granted["channel"] == channel)]
        return set(chosen["customer_id"])

    return who("profiling", "any") & who("marketing", CHANNEL)


def write_latest_online(container: Container, bank_dir: Path, end: datetime) -> list[str]:
    """The feature rows as of ``end`` online, as the stream would have left them; returns the
    customers who have a row (the others decide without features)."""
    customers = pd.read_parquet(bank_dir / "customers.parquet", columns=["customer_id"])
    days = (pq.read_table(path) for path in sorted((bank_dir / "events").glob("*.parquet")))
    (_, latest), *_ = reversed(list(history(days, [end], customers["customer_id"].tolist())))
    frame = latest.to_pandas()
    container.features.online.write(
        frame["customer_id"].tolist(),
        frame["event_timestamp"].to_numpy(dtype="datetime64[us]").astype(np.int64),
        frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64),
    )
    return list(frame["customer_id"])


def build_state(state: State, backends: Backends, seed: int) -> dict[str, Any]:
    """The project's pipeline end to end; returns seconds per step and what was trained."""
    seconds: dict[str, float] = {}
    bank_dir = state.home / "bank"
    # The bank ends at today's midnight: the features served are a day old at most, and
    # history() takes snapshots at midnights only.
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    began = time.perf_counter()
    spec = BankSpec(seed=seed, customers=state.customers, days=state.days, end=end)
    write_bank(spec, bank_dir, workers=2)
    seconds["generate"] = time.perf_counter() - began

    container = Container(load_settings(environment(state, backends)))
    try:
        began = time.perf_counter()
        consents = pd.read_parquet(bank_dir / "consents.parquet")
        pipeline.record_consents(container, consents)
        customers = pd.read_parquet(bank_dir / "customers.parquet")
        pipeline.write_profiles(container, customers, spec.start)
        seconds["consents_and_profiles"] = time.perf_counter() - began

        began = time.perf_counter()
        pipeline.backfill(container, bank_dir, step_days=7)
        online = write_latest_online(container, bank_dir, end)
        seconds["backfill_and_online"] = time.perf_counter() - began

        began = time.perf_counter()
        # The 14-day warm-up of the demo: a bank of a few months cannot fill the 90-day windows
        # before the snapshots a time split needs.
        report = pipeline.train_from_bank(container, bank_dir, NEEDS, step_days=7, warm_up_days=14)
        seconds["train_and_register"] = time.perf_counter() - began
    finally:
        container.engine.dispose()
    # The customers the load is drawn from: profiled and contactable on the app, with features.
    deciders = sorted(consenting(consents) & set(online))
    (state.home / DECIDERS).write_text(json.dumps(deciders))
    return {
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "models": sorted(m.need for m in report.models),
        "skipped": report.skipped,
        "training_rows": report.rows,
    }


# --- the API process ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_command(port: int) -> list[str]:
    """The project's console script, as an operator would start the API."""
    script = Path(sys.executable).with_name("nextbest")
    if not script.exists():
        raise SystemExit(f"{script} is missing: install the project into this environment")
    return [str(script), "serve", "--port", str(port)]


@dataclass
class ApiServer:
    """``nextbest serve`` in its own process with the state's settings (and nothing else of
    this process's ``NEXTBEST_*``: an unknown one would stop it)."""

    env: dict[str, str]
    log_path: Path
    workers: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEXTBEST_")}
        env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                serve_command(self.port), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self._wait_ready()

    def _wait_ready(self) -> dict[str, Any]:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the API exited ({self.process.returncode}):\n{self.log()}")
                try:
                    response = client.get("/readyz")
                    if response.status_code == 200:
                        self._wait_workers(deadline)
                        return dict(response.json())
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.2)
        raise RuntimeError(f"the API was not ready within {READY_TIMEOUT_S:.0f} s:\n{self.log()}")

    def _wait_workers(self, deadline: float) -> None:
        """With workers, one answering is not all of them ready: wait until every worker is
        running and the whole tree has been nearly idle for a second (building a worker's
        container keeps a core busy)."""
        if self.workers <= 1:
            return
        assert self.process is not None
        master = psutil.Process(self.process.pid)
        while time.monotonic() < deadline:
            tree = [master, *master.children(recursive=True)]
            before = sum(sum(p.cpu_times()[:2]) for p in tree)
            time.sleep(1.0)
            after = sum(sum(p.cpu_times()[:2]) for p in tree)
            if len(tree) > self.workers and after - before < 0.05:
                return
        raise RuntimeError(f"the API's workers did not settle:\n{self.log()}")

    def log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ProcessSampler:
    """Samples the API's memory in a thread: resident (RSS) of each process, the master's and
    its workers', and proportional (PSS: pages shared by the workers counted once across them);
    and the CPU of them all."""

    def __init__(self, pid: int, period: float = RSS_PERIOD_S) -> None:
        self.process = psutil.Process(pid)
        self.period = period
        self.samples: list[int] = []  # total RSS
        self.largest: list[int] = []  # the largest process's RSS
        self.pss: list[int] = []  # total PSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_began = 0.0
        self.cpu_seconds = 0.0
        self.processes = 1

    def _tree(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def rss(self) -> int:
        sizes, pss = [], 0
        for process in self._tree():
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            sizes.append(int(info.rss))
            pss += int(getattr(info, "pss", info.rss))
        self.largest.append(max(sizes))
        self.pss.append(pss)
        self.processes = len(sizes)
        return sum(sizes)

    def _cpu(self) -> float:
        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += float(times.user + times.system)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append(self.rss())
            except psutil.Error:
                return  # the process is gone; the run reports the failures

    def __enter__(self) -> ProcessSampler:
        self._cpu_began = self._cpu()
        self.samples.append(self.rss())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.samples.append(self.rss())
            self.cpu_seconds = self._cpu() - self._cpu_began
        except psutil.Error:
            pass


# --- the load ------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One request: when it was due, when the generator got to it, when it went on the wire
    (a free connection found), and what came back."""

    due: float
    reached: float = 0.0
    on_wire: float = 0.0
    done: float = 0.0
    skipped: bool = False  # the client already had its cap of requests in flight
    status: int | None = None
    error: str | None = None
    server_ms: float | None = None
    scored: bool = False
    explained: bool = False
    delivered: bool = False

    @property
    def client_ms(self) -> float:
        return (self.done - self.on_wire) * 1000

    @property
    def from_schedule_ms(self) -> float:
        return (self.done - self.due) * 1000

    @property
    def lag_ms(self) -> float:
        return (self.reached - self.due) * 1000


@dataclass(frozen=True)
class Load:
    rate: float
    seconds: float
    connections: int
    #: Beyond this many requests in flight, due requests are skipped and counted: a server
    #: that cannot keep up would otherwise bury the generator in its own queue.
    max_in_flight: int


def app_duration(header: str | None) -> float | None:
    """The ``app`` metric's ``dur`` (ms) from a ``Server-Timing`` header, if there is one."""
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        if name != "app":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                try:
                    return float(value.strip().strip('"'))
                except ValueError:
                    return None
    return None


async def _request(client: Client, outcome: Outcome, request: bytes) -> None:
    def on_wire() -> None:
        outcome.on_wire = time.perf_counter()

    try:
        answer = await client.send(request, REQUEST_TIMEOUT_S, on_wire)
    except (OSError, TimeoutError) as error:
        outcome.done = time.perf_counter()
        outcome.error = f"{type(error).__name__}: {error}"
        return
    outcome.done = time.perf_counter()
    outcome.status = answer.status
    outcome.server_ms = app_duration(answer.headers.get("server-timing"))
    if answer.status == 200:
        body = json.loads(answer.body)
        outcome.scored = bool(body.get("models"))
        actions = body.get("actions") or []
        outcome.delivered = bool(actions)
        outcome.explained = any(a.get("reasons") for a in actions)


async def open_loop(
    base_url: str, api_key: str, customers: Sequence[str], load: Load, rng: random.Random
) -> tuple[list[Outcome], float]:
    """Requests at ``load.rate`` per second for ``load.seconds``, each sent when it is due
    whatever the ones before it are doing; returns the outcomes and the wall time until the
    last answer. The client is ``bench.http``'s: it leaves the cores to the server."""
    address = httpx.URL(base_url)
    host, port = address.host, address.port or 80
    client = Client(host, port, load.connections, wanted=("server-timing",))
    headers = {"X-API-Key": api_key}
    requests = {
        c: Client.post_json(
            "/v1/decisions", f"{host}:{port}", {"customer_id": c, "channel": CHANNEL}, headers
        )
        for c in customers
    }
    try:
        outcomes: list[Outcome] = []
        tasks: set[asyncio.Task[None]] = set()
        began = time.perf_counter()
        for i in range(int(load.rate * load.seconds)):
            due = began + i / load.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = Outcome(due=due, reached=time.perf_counter())
            outcomes.append(outcome)
            if len(tasks) >= load.max_in_flight:
                outcome.skipped = True
                continue
            task = asyncio.create_task(_request(client, outcome, requests[rng.choice(customers)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.wait(set(tasks))
        return outcomes, time.perf_counter() - began
    finally:
        client.close()


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
    }


def _share(outcomes: list[Outcome], flag: str) -> float:
    return round(sum(getattr(o, flag) for o in outcomes) / max(len(outcomes), 1), 4)


def run_load(
    server: ApiServer, api_key: str, customers: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    """A warm-up (discarded), then the measured run with the API's memory and CPU sampled."""
    assert server.process is not None
    rng = random.Random(args.seed)
    load = Load(args.rate, args.seconds, args.connections, args.max_in_flight)
    if args.warmup_seconds > 0:
        warm_up = Load(args.rate, args.warmup_seconds, args.connections, args.max_in_flight)
        uvloop.run(open_loop(server.base_url, api_key, customers, warm_up, rng))
    # The models and Feast objects loaded for the in-process comparison stay alive: keep the
    # collector from walking them in the middle of the generator's schedule.
    gc.collect()
    gc.freeze()
    cpu_began, machine_began = time.process_time(), psutil.cpu_times()
    with ProcessSampler(server.process.pid) as sampler:
        outcomes, wall = uvloop.run(open_loop(server.base_url, api_key, customers, load, rng))
    generator_cpu = time.process_time() - cpu_began
    machine_busy = _busy_seconds(psutil.cpu_times()) - _busy_seconds(machine_began)
    result = summarise_load(outcomes, wall, load)
    mb = [s / 2**20 for s in sampler.samples]
    result["api_processes"] = sampler.processes
    result["api_rss_mb"] = {
        "after_warmup": round(mb[0], 1),
        "max": round(max(mb), 1),
        "end": round(mb[-1], 1),
        # With workers: the largest single process, and the shared pages counted once.
        "largest_process_max": round(max(sampler.largest) / 2**20, 1),
        "pss_max": round(max(sampler.pss) / 2**20, 1),
    }
    # In cores: one Python process tops out near 1.0 under the GIL (all workers together).
    result["api_cpu_cores"] = round(sampler.cpu_seconds / wall, 2)
    result["api_cpu_ms_per_request"] = round(
        sampler.cpu_seconds * 1000 / max(result["requests_sent"], 1), 3
    )
    result["generator_cpu_cores"] = round(generator_cpu / wall, 2)
    # Redis and PostgreSQL doing the API's work, and anything else running (a test suite, say):
    # a quiet machine leaves little here beyond the two servers.
    others = machine_busy - sampler.cpu_seconds - generator_cpu
    result["other_processes_cpu_cores"] = round(others / wall, 2)
    return result


def _busy_seconds(times: Any) -> float:
    """CPU seconds the whole machine spent running something (guest time is in user already)."""
    parts = ("user", "nice", "system", "irq", "softirq")
    return float(sum(getattr(times, name, 0.0) for name in parts))


# --- the feature and model part in this process --------------------------------------------
def naive_decision_part(
    store: Any, service: Any, models: Mapping[str, NeedModel], customer: str
) -> dict[str, np.ndarray]:
    """Per request through the Feast SDK, then per need one predict and one pred_contrib."""
    row = store.get_online_features(
        features=service, entity_rows=[{"customer_id": customer}]
    ).to_dict()
    contributions = {}
    for need, model in models.items():
        matrix = np.array(
            [[np.nan if row[f][0] is None else row[f][0] for f in model.features]], dtype=float
        )
        model.booster.predict(matrix)
        contributions[need] = np.asarray(model.booster.predict(matrix, pred_contrib=True))[0]
    return contributions


def our_decision_part(
    container: Container, models: Mapping[str, NeedModel], customer: str
) -> dict[str, dict[str, float]]:
    """What the decision service does for features and scores (with every contribution)."""
    online = container.features.read(customer)
    values = online.values if online.known else {}
    return {need: dict(model.score(values)[1]) for need, model in models.items()}


def time_each(work: Callable[[str], object], customers: Sequence[str]) -> list[float]:
    """Milliseconds per call of ``work(customer)``, one after another."""
    spent = []
    for customer in customers:
        began = time.perf_counter()
        work(customer)
        spent.append((time.perf_counter() - began) * 1000)
    return spent


def compare_in_process(
    container: Container, customers: Sequence[str], warmup: int = 20
) -> dict[str, Any]:
    models = container.models.snapshot()
    store = container.feature_store
    service = store.get_feature_service(ACTIVITY_SERVICE)
    naive = partial(naive_decision_part, store, service, models)
    ours = partial(our_decision_part, container, models)

    # Both ways must do the same work: the same contributions for the same customers.
    for customer in customers[:5]:
        theirs, mine = naive(customer), ours(customer)
        for need, model in models.items():
            expected = dict(zip(model.features, theirs[need][:-1], strict=True))
            assert all(np.isclose(expected[f], c) for f, c in mine[need].items()), need
    for customer in customers[:warmup]:  # connections, caches, lazy imports
        naive(customer)
        ours(customer)
    naive_ms, our_ms = time_each(naive, customers), time_each(ours, customers)
    naive_d, our_d = distribution(naive_ms), distribution(our_ms)
    return {
        "customers": len(customers),
        "needs": sorted(models),
        "naive_ms": naive_d,
        "ours_ms": our_d,
        "naive_over_ours_p50": _ratio(naive_d, our_d, "p50"),
        "naive_over_ours_p99": _ratio(naive_d, our_d, "p99"),
    }


def _ratio(
    top: Mapping[str, float | int], bottom: Mapping[str, float | int], key: str
) -> float | None:
    if key not in top or key not in bottom or not bottom[key]:
        return None
    return round(float(top[key]) / float(bottom[key]), 2)


# --- the run -------------------------------------------------------------------------------
@contextmanager
def state_for(
    args: argparse.Namespace, backends: Backends
) -> Iterator[tuple[State, dict[str, Any]]]:
    """The state to run on (built unless ``--reuse``); dropped at the end unless kept."""
    scratch = None if args.home else tempfile.mkdtemp(prefix="nextbest-bench-decide-")
    home = (args.home or Path(str(scratch))).absolute()
    home.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"home": str(home), "kept": False}
    if args.reuse:
        state = State.load(home)
        if (state.schema is not None, state.online_store) != (
            backends.postgres,
            "redis" if backends.redis_url else "sqlite",
        ):
            raise SystemExit(f"{home} was built on other backends than --redis-url/--database-url")
    else:
        if (replaced := replace_state(home, backends)) is not None:
            report["replaced"] = replaced
        state = new_state(home, backends, args.customers, args.days)
    complete = args.reuse
    try:
        if args.reuse:
            report["reused"] = True
        else:
            report["built"] = build_state(state, backends, args.seed)
            state.save()
            complete = True
        yield state, report
    finally:
        if args.keep and complete:
            report["kept"] = True
        else:
            report["dropped"] = drop_state(state, backends)
            state.manifest.unlink(missing_ok=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


#: Iterations of the speed probe's loop: long enough to time, short enough to repeat.
PROBE_LOOPS = 2_000_000


def machine_load() -> dict[str, Any]:
    """How busy and how fast the machine is now. The speed probe is a fixed pure-Python loop
    (ms of CPU, best of three): on a shared machine the same code runs at different speeds
    from one hour to the next, and a result means little without it."""
    best = float("inf")
    for _ in range(3):
        started, total = time.process_time(), 0
        for i in range(PROBE_LOOPS):
            total += i
        best = min(best, time.process_time() - started)
    return {
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "speed_probe_ms": round(best * 1000, 1),
    }


def verdict(load: dict[str, Any]) -> dict[str, bool]:
    checks = {
        "p50_le_3ms": float(load["server_ms"].get("p50", float("inf"))) <= TARGET_P50_MS,
        "p99_le_15ms": float(load["server_ms"].get("p99", float("inf"))) <= TARGET_P99_MS,
        # All the API's processes, shared pages counted once (one process: its RSS).
        "rss_le_600mb": float(load["api_rss_mb"]["pss_max"]) <= TARGET_RSS_MB,
        "rate_achieved": float(load["rate_achieved"]) >= ON_SCHEDULE * float(load["rate_target"]),
        "no_5xx": load["server_errors_5xx"] == 0 and not load["transport_errors"],
        "server_side_latency": load["latency_source"] == "server-timing",
        # Real decisions: a run whose customers had no online rows (a flushed Redis under a
        # kept state) scores nothing and is fast for the wrong reason.
        "decisions_scored": float(load["share_with_models_scored"]) >= MIN_SCORED_SHARE,
    }
    checks["all"] = all(checks.values())
    return checks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="State folder (default: temp).")
    parser.add_argument("--reuse", action="store_true", help="The state in --home was kept.")
    parser.add_argument("--keep", action="store_true", help="Keep the state for --reuse.")
    parser.add_argument(
        "--build-only", action="store_true", help="Build and keep the state; measure nothing."
    )
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis-url", default=os.environ.get("TEST_REDIS_URL", ""))
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL") or "sqlite")
    parser.add_argument("--rate", type=float, default=500.0, help="Decisions per second.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="API processes (NEXTBEST_API_WORKERS; default: one per core).",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="Requests due while this many are in flight are skipped and counted (default: "
        "--connections, so requests never queue in the client for a connection).",
    )
    parser.add_argument("--naive-customers", type=int, default=500)
    parser.add_argument(
        "--server-log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="WARNING keeps uvicorn's access log (a line per request) out of the measurement.",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="Tiny bank and load, to check it works."
    )
    args = parser.parse_args()
    args.keep = args.keep or args.build_only
    args.max_in_flight = args.max_in_flight or args.connections
    if args.smoke:
        args.customers, args.days = min(args.customers, 1_000), min(args.days, 100)
        args.rate, args.seconds, args.warmup_seconds = 20.0, 3.0, 1.0
        args.naive_customers = min(args.naive_customers, 50)
    return args


def measure(state: State, backends: Backends, args: argparse.Namespace) -> dict[str, Any]:
    """In-process naive against ours first (nothing else running), then the API under load."""
    result: dict[str, Any] = {}
    deciders: list[str] = json.loads((state.home / DECIDERS).read_text())
    result["decision_customers"] = len(deciders)
    container = Container(load_settings(environment(state, backends)))
    try:
        sample = random.Random(args.seed).sample(deciders, min(args.naive_customers, len(deciders)))
        if not all(container.decisions.features.read(c).known for c in sample[:20]):
            raise SystemExit(
                f"the online store has no rows for the decision customers in {state.home} "
                "(Redis flushed or restarted since it was built?): build it again"
            )
        result["in_process"] = compare_in_process(container, sample)
    finally:
        container.close()
    development_keys(state.home)  # the API reads the keys; make them before it starts
    api_key = plain_key(state.home / DEV_KEYS_FILE, "channel")
    env = environment(state, backends, args.server_log_level)
    env["NEXTBEST_API_WORKERS"] = str(args.workers)
    server = ApiServer(env, state.home / "api.log", workers=args.workers)
    try:
        ready = server.start()
        result["api"] = {
            "command": f"nextbest serve --workers {args.workers}",
            "workers": args.workers,
            "log_level": args.server_log_level,
            "models": ready.get("models"),
        }
        result["load"] = run_load(server, api_key, deciders, args)
    except BaseException:
        print(server.log(), file=sys.stderr)
        raise
    finally:
        server.stop()
    load, naive = result["load"], result["in_process"]["naive_ms"]
    result["naive_p50_over_server_p50"] = _ratio(naive, load["server_ms"], "p50")
    result["naive_p99_over_server_p99"] = _ratio(naive, load["server_ms"], "p99")
    result["meets_target"] = verdict(load)
    return result


def main() -> None:
    args = parse_args()
    backends = Backends(args.redis_url or None, args.database_url)
    result: dict[str, Any] = {
        "benchmark": "decide",
        "smoke": args.smoke,
        "backends": {
            "online_store": "redis" if backends.redis_url else "sqlite",
            "operational_store": "postgresql" if backends.postgres else "sqlite",
            "mlflow": "sqlite",
        },
        "targets": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS, "rss_mb": TARGET_RSS_MB},
        "load_before": machine_load(),
    }
    with state_for(args, backends) as (state, report):
        result["state"] = report
        if not args.build_only:
            result.update(measure(state, backends, args))
    result["load_after"] = machine_load()
    emit(result)


if __name__ == "__main__":
    main()
