"""Benchmark: the stream worker, from real Kafka into the Feast online store.

Measures, in one run:

- sustained throughput of one worker process (events/s, median of ``--repeat`` runs) from Kafka
  into the Redis online store, and into the SQLite online store;
- the naive path on the same records: one ``FeatureStore.push`` per event;
- freshness at a steady ``--rate`` (2,000 events/s) of a bank's events dated as they are sent,
  with probes among them, the worker running as ``nextbest stream``: from producing a probe to its
  customer's features being readable through the Feast SDK (p50, p99); and the same with the
  bank's month-old history replayed among the live probes, the timers stepping its customers
  through every midnight since (``freshness_replaying_history``);
- with ``--timer-customers N``, what the timers of N customers cost on a simulated clock
  (``bench.stream_timers``): the share of a core in steady state.

Needs the servers of ``scripts/services`` (TEST_KAFKA_BOOTSTRAP_SERVERS, TEST_REDIS_URL).

    python -m bench.stream --customers 10000 --days 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from kafka import KafkaConsumer, KafkaProducer

from bench.common import emit, median
from bench.stream_timers import measure_timers
from feature_repo.activity import ACTIVITY_FIELDS
from feature_repo.arrival import apply_events
from feature_repo.buckets import WindowState
from feature_repo.definitions import ACTIVITY_PUSH
from feature_repo.events import InvalidEvent, parse_event
from feature_repo.windows import activity_rows
from service.adapters.transport import EVENTS_TOPIC, Record
from service.bootstrap import Container
from service.entrypoints.heap import settle_stream_worker
from service.settings import Settings, load_settings
from training.bank.in_memory import generate
from training.bank.spec import BankSpec

if TYPE_CHECKING:
    from feast import FeatureStore


def settings_for(home: Path, online: str, namespace: str, run: str) -> Settings:
    return load_settings(settings_env(home, online, namespace, run))


def settings_env(home: Path, online: str, namespace: str, run: str) -> dict[str, str]:
    return {
        "NEXTBEST_HOME": str(home),
        "NEXTBEST_EVENT_TRANSPORT": "kafka",
        "NEXTBEST_KAFKA_BOOTSTRAP_SERVERS": os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"],
        "NEXTBEST_TOPIC_NAMESPACE": namespace,
        "NEXTBEST_CONSUMER_GROUP": f"bench-{run}",
        "NEXTBEST_ONLINE_STORE": online,
        "NEXTBEST_REDIS_URL": os.environ["TEST_REDIS_URL"],
        "NEXTBEST_FEAST_PROJECT": f"b{run}",
        "NEXTBEST_LOG_LEVEL": "WARNING",
    }


def produce(topic: str, records: list[tuple[str | None, bytes]]) -> float:
    producer = KafkaProducer(
        bootstrap_servers=os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"],
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
    )
    began = time.perf_counter()
    for key, value in records:
        producer.send(topic, key=None if key is None else key.encode(), value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - began


def run_worker(home: Path, online: str, namespace: str, expected: int) -> dict[str, float]:
    """One worker process's throughput over the whole topic (first record to last write)."""
    run = uuid.uuid4().hex[:8]
    container = Container(settings_for(home / run, online, namespace, run))
    worker = container.worker()
    original = worker.process
    marks: dict[str, float] = {"records": 0}

    def timed(records: list[Record]) -> None:
        marks.setdefault("first", time.perf_counter())
        original(records)
        marks["last"] = time.perf_counter()
        marks["records"] += len(records)
        if marks["records"] >= expected:
            worker.stopping.set()

    worker.process = timed  # type: ignore[method-assign]  # instrumented for the measurement
    settle_stream_worker()  # as ``nextbest stream`` does, once the worker is wired
    worker.run(idle_exit_s=10)
    worker.close()
    seconds = marks["last"] - marks["first"]
    return {
        "events": worker.stats.events,
        "seconds": seconds,
        "events_per_second": worker.stats.events / seconds,
    }


def run_naive(home: Path, namespace: str, limit_s: float) -> dict[str, float]:
    """The naive way: consume, fold the event, and ``FeatureStore.push`` one row per event."""
    run = uuid.uuid4().hex[:8]
    container = Container(settings_for(home / run, "redis", namespace, run))
    store = container.feature_store
    consumer = KafkaConsumer(
        container.settings.topic(EVENTS_TOPIC),
        bootstrap_servers=os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"],
        group_id=f"naive-{run}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    states: dict[str, WindowState] = {}
    done, began = 0, None
    while began is None or time.perf_counter() - began < limit_s:
        for messages in consumer.poll(timeout_ms=1000, max_records=100).values():
            for message in messages:
                began = began or time.perf_counter()
                try:
                    event = parse_event(message.value)
                except InvalidEvent:
                    continue
                apply_events(states, [event])
                state = states[event.customer_id]
                # The row the stream writes: the features and until when they hold.
                fields = activity_rows([state], [state.next_change_us()])[0]
                row = dict(zip(ACTIVITY_FIELDS, fields, strict=True))
                frame = pd.DataFrame(
                    [
                        {
                            "customer_id": event.customer_id,
                            "event_timestamp": datetime.fromtimestamp(state.as_of_us / 1e6, UTC),  # type: ignore[operator]
                            **row,
                        }
                    ]
                )
                store.push(ACTIVITY_PUSH, frame)
                consumer.commit()
                done += 1
    consumer.close()
    seconds = time.perf_counter() - began
    return {"events": done, "seconds": seconds, "events_per_second": done / seconds}


def freshness(
    home: Path, rate: float, seconds: float, probes: int, live: bool = True
) -> dict[str, float | None]:
    """Produce a bank's events at ``rate`` while a worker runs (``nextbest stream``, in a
    process of its own as deployed); probe customers get one event each, and a reader polls
    the Feast SDK until that customer's row appears. ``live``: each event is dated when it is
    sent, as on a live stream; otherwise the bank's history (a month old) is replayed among
    the live probes, and the timers step its customers through every midnight since."""
    run = uuid.uuid4().hex[:8]
    namespace = f"f{run}."
    env = settings_env(home / run, "redis", namespace, run)
    container = Container(load_settings(env))
    store = container.feature_store
    bank = generate(BankSpec(seed=3, customers=5_000, days=10))
    background = [(k, v) for _, k, v in bank.records()][: int(rate * seconds)]
    producer = KafkaProducer(
        bootstrap_servers=os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"], acks=1, linger_ms=1
    )
    topic = container.settings.topic(EVENTS_TOPIC)
    # The topic exists before the worker joins its group: a group formed before the topic has
    # partitions assigns the worker nothing until its next metadata refresh, minutes later.
    producer.send(topic, key=b"W", value=json.dumps({"warm": 1}).encode())
    producer.flush()
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("nextbest")), "stream", "--no-alerts"],
        env={**os.environ, **env},
        stdout=sys.stderr,  # its summary line is not this benchmark's JSON
    )
    # Warm up: the worker owns its partitions before timing starts.
    time.sleep(15)
    # One reader polls every probe still unseen in one online read: a thread per probe polling
    # on its own would compete with the worker for the interpreter and measure that instead.
    unseen: dict[str, float] = {}
    lock = threading.Lock()
    latencies: list[float] = []
    producing = threading.Event()
    producing.set()
    reader = threading.Thread(
        target=_await_rows, args=(store, unseen, lock, producing, latencies), daemon=True
    )
    reader.start()
    probe_every = max(len(background) // probes, 1)
    sent_probes = 0
    began = time.perf_counter()
    for i, (key, value) in enumerate(background):
        if live:
            value = _dated_now(value)
        producer.send(topic, key=None if key is None else key.encode(), value=value)
        if i % probe_every == 0:
            customer = f"P{i:09d}"
            now = datetime.now(UTC)
            probe = {
                "event_id": f"probe-{run}-{i}",
                "customer_id": customer,
                "type": "login",
                "occurred_at": now.isoformat(),
                "channel": "mobile_app",
                "payload": {"method": "password"},
            }
            sent = time.perf_counter()
            producer.send(topic, key=customer.encode(), value=json.dumps(probe).encode())
            producer.flush()
            with lock:
                unseen[customer] = sent
            sent_probes += 1
        wait = began + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    producer.flush()
    elapsed = time.perf_counter() - began
    producing.clear()
    reader.join()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    values = np.array(latencies)
    return {
        "rate_events_per_second": rate,
        "achieved_rate": round(len(background) / elapsed, 1),
        "probes": sent_probes,
        # Probes whose row did not appear within the wait (30 s): counted, never dropped.
        "probes_not_seen": sent_probes - len(values),
        "p50_seconds": round(float(np.percentile(values, 50)), 3) if len(values) else None,
        "p99_seconds": round(float(np.percentile(values, 99)), 3) if len(values) else None,
        "max_seconds": round(float(values.max()), 3) if len(values) else None,
    }


def _dated_now(value: bytes) -> bytes:
    """The event dated now; a malformed record as it is."""
    try:
        event = json.loads(value)
    except ValueError:
        return value
    if not isinstance(event, dict) or not isinstance(event.get("occurred_at"), str):
        return value
    event["occurred_at"] = datetime.now(UTC).isoformat()
    return json.dumps(event).encode()


def _await_rows(
    store: FeatureStore,
    unseen: dict[str, float],
    lock: threading.Lock,
    producing: threading.Event,
    out: list[float],
) -> None:
    """Read the rows of the probes not seen yet, every 10 ms, until none is left once the
    producing ends; a probe not seen 30 s after it was sent is given up (not counted)."""
    while True:
        with lock:
            waiting = dict(unseen)
        if not waiting and not producing.is_set():
            return
        if waiting:
            customers = list(waiting)
            rows = store.get_online_features(
                features=["customer_activity:logins_1d"],
                entity_rows=[{"customer_id": c} for c in customers],
            ).to_dict()
            seen = time.perf_counter()
            with lock:
                for customer, value in zip(customers, rows["logins_1d"], strict=True):
                    if value is not None:
                        out.append(seen - waiting[customer])
                        del unseen[customer]
                    elif seen - waiting[customer] > 30:
                        del unseen[customer]
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive-seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--freshness-seconds", type=float, default=30.0)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument(
        "--timer-customers",
        type=int,
        default=0,
        help="Also measure the timers of this many customers on a simulated clock (0: not).",
    )
    parser.add_argument("--timers-only", action="store_true", help="Measure only the timers.")
    parser.add_argument(
        "--timer-idle-seconds", type=float, default=30.0, help="How long the idle loop runs."
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="nextbest-bench-stream-"))
    timers = (
        measure_timers(home, args.timer_customers, args.timer_idle_seconds)
        if args.timer_customers
        else None
    )
    if args.timers_only:
        emit({"benchmark": "stream", "timers": timers})
        return
    bank = generate(
        BankSpec(seed=11, customers=args.customers, days=args.days, malformed_fraction=0.001)
    )
    records = [(k, v) for _, k, v in bank.records()]
    namespace = f"s{uuid.uuid4().hex[:8]}."
    produce_s = produce(f"{namespace}{EVENTS_TOPIC}", records)
    expected = len(records)

    redis_runs = [run_worker(home, "redis", namespace, expected) for _ in range(args.repeat)]
    sqlite_runs = [run_worker(home, "sqlite", namespace, expected) for _ in range(1)]
    naive = run_naive(home, namespace, args.naive_seconds)
    fresh = freshness(home, args.rate, args.freshness_seconds, args.probes)
    replaying = freshness(home, args.rate, args.freshness_seconds, args.probes, live=False)
    redis_rate = median([r["events_per_second"] for r in redis_runs])
    emit(
        {
            "benchmark": "stream",
            "events_in_topic": expected,
            "customers": args.customers,
            "days": args.days,
            "produce_events_per_second": round(expected / produce_s),
            "redis": {
                "events_per_second_median": round(redis_rate),
                "runs": [{k: round(v, 2) for k, v in r.items()} for r in redis_runs],
            },
            "sqlite": {"runs": [{k: round(v, 2) for k, v in r.items()} for r in sqlite_runs]},
            "naive_push_per_event": {k: round(v, 2) for k, v in naive.items()},
            "speedup_vs_naive": round(redis_rate / naive["events_per_second"], 1),
            "freshness": fresh,
            "freshness_replaying_history": replaying,
            **({"timers": timers} if timers is not None else {}),
        }
    )


if __name__ == "__main__":
    main()
