"""Benchmark: from an event on Kafka to the RM alert it raises, under 2,000 events/s.

Runs on a state kept by ``python -m bench.decide --keep`` (a bank with seven trained models,
the Redis online store, a PostgreSQL schema). Starts ``nextbest stream`` (the worker and its
alerter) as its own process on fresh Kafka topics, then produces open-loop at ``--rate``:
background events of a generated bank (page views, card spending, logins, salaries, ...) and,
``--scenarios`` times a second, the seed scenario for a new customer (a 600,000 transfer in,
then property and mortgage page views) among those with an RM and consent. A consumer of
``nextbest.alerts.v1`` times each alert from the moment the event it names (``origin``) was
sent. Measures:

- event-to-alert latency: p50, p90, p99, max; alerts by action, and the share of scenario
  customers alerted;
- the rate achieved, the worker's CPU, its alerter's counters (rescored, gated, skipped);
- in this process on the same state, the cost per event of our path (debounced: one
  rescoring per customer per window, the gate only on a crossing) against the naive one (the
  full gated and logged decision on the RM channel for every event).

    python -m bench.decide --home /tmp/decide --build-only
    python -m bench.alerts --home /tmp/decide --rate 2000 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import text

from bench.common import emit
from bench.sampling import machine_load
from bench.state import Backends, State, environment
from bench.summaries import distribution
from service.adapters.transport import ALERTS_TOPIC, EVENTS_TOPIC
from service.bootstrap import Container
from service.settings import Settings, load_settings
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.origin import Origin
from training.bank.in_memory import generate
from training.bank.scenario import seed_scenario
from training.bank.spec import BankSpec

TARGET_P99_S = 2.0
READY_TIMEOUT_S = 120.0


def alertable(container: Container) -> list[str]:
    """Customers with an RM, profiling consent and RM marketing consent (latest choices)."""
    query = text(
        """
        with latest as (
          select customer_id, purpose, channel, granted,
                 row_number() over (partition by customer_id, purpose, channel
                                    order by recorded_at desc, id desc) as rank
          from consent_history)
        select c.customer_id from customers c
        where c.rm_id is not null
          and exists (select 1 from latest l where l.customer_id = c.customer_id and l.rank = 1
                      and l.purpose = 'profiling' and l.channel = 'any' and l.granted)
          and exists (select 1 from latest l where l.customer_id = c.customer_id and l.rank = 1
                      and l.purpose = 'marketing' and l.channel = 'rm' and l.granted)
        order by c.customer_id
        """
    )
    with container.engine.connect() as connection:
        return [row[0] for row in connection.execute(query)]


def background_events(customers: int, count: int, seed: int) -> list[dict[str, Any]]:
    """A generated bank's last days of events, for the state's customer ids, as of now."""
    end = datetime.now(UTC)
    bank = generate(BankSpec(seed=seed, customers=customers, days=3, end=end))
    events = bank.event_dicts()[-count:]  # the latest, in time order as a stream has them
    return [{**event, "event_id": f"b-{uuid.uuid4()}"} for event in events]


class AlertListener(threading.Thread):
    """Consumes the alerts topic; records when each alert arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=200,
        )
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.stopping = threading.Event()
        # Partitions assigned before the run starts: an alert must not wait for the metadata.
        deadline = time.monotonic() + 30.0
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=100)
        if not self.consumer.assignment():
            raise RuntimeError(f"no partitions of {topic} assigned within 30 s")
        self.consumer.seek_to_beginning()

    def run(self) -> None:
        while not self.stopping.is_set():
            for message in self.consumer:
                self.arrivals.append((time.perf_counter(), json.loads(message.value)))
        self.consumer.close()


def run_stream(
    state: State, backends: Backends, bootstrap: str, args: argparse.Namespace
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEXTBEST_")}
    env.update(environment(state, backends))
    env.update(
        {
            "NEXTBEST_EVENT_TRANSPORT": "kafka",
            "NEXTBEST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "NEXTBEST_TOPIC_NAMESPACE": f"ba{run}.",
            "NEXTBEST_CONSUMER_GROUP": f"bench-alerts-{run}",
        }
    )
    settings = load_settings({k: v for k, v in env.items() if k.startswith("NEXTBEST_")})
    events_topic, alerts_topic = settings.topic(EVENTS_TOPIC), settings.topic(ALERTS_TOPIC)
    candidates = _alertable_without_alerts(settings)
    rng = random.Random(args.seed)
    rng.shuffle(candidates)
    total = int(args.rate * args.seconds)
    background = background_events(state.customers, total, args.seed)
    scenarios_due = int(args.scenarios * args.seconds)
    if scenarios_due > len(candidates):
        raise SystemExit(
            f"only {len(candidates)} alertable customers for {scenarios_due} scenarios"
        )

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    # The topics exist before the worker joins (it would otherwise wait for the metadata).
    for topic in (events_topic, alerts_topic):
        producer.send(topic, key=b"warm", value=b'{"warm": 1}')
    producer.flush()
    log_path = state.home / "bench-alerts-stream.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "nextbest"), "stream"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    listener = AlertListener(bootstrap, alerts_topic)
    listener.start()
    try:
        sampler = psutil.Process(worker.pid)
        _wait_until_settled(producer, events_topic, background[0], worker, sampler, log_path)
        cpu_before = sum(sampler.cpu_times()[:2])
        load = _send_load(producer, events_topic, background, candidates[:scenarios_due], args)
        time.sleep(args.drain_seconds)  # alerts for the last events
        cpu = sum(sampler.cpu_times()[:2]) - cpu_before
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
        listener.stopping.set()
        listener.join(10)
        producer.close()
    stats = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    latencies, by_action, alerted = _alerts_received(listener.arrivals, load.sent)
    events_sent = len(load.sent)
    return {
        "events_sent": events_sent,
        "rate_target": args.rate,
        "rate_achieved": round(events_sent / load.elapsed, 1),
        "seconds": round(load.elapsed, 1),
        "scenarios": len(load.scenario_customers),
        "scenario_customers_alerted": len(alerted & set(load.scenario_customers)),
        "alerts": sum(by_action.values()),
        "alerts_by_action": dict(by_action.most_common()),
        "event_to_alert_seconds": distribution(latencies),
        "worker_cpu_cores": round(cpu / (load.elapsed + args.drain_seconds), 2),
        "worker": stats,
        "meets_target": bool(latencies) and float(np.percentile(latencies, 99)) <= TARGET_P99_S,
    }


def _alertable_without_alerts(settings: Settings) -> list[str]:
    """The customers a scenario can alert on, after clearing what an earlier run left: its open
    alerts would stop this run's as repeats, its remembered scores would hide the crossings."""
    container = Container(settings)
    try:
        candidates = alertable(container)
        with container.engine.begin() as connection:
            connection.execute(text("delete from alerts"))
        memory = container.alert_memory()
        memory.clear()
        memory.close()
    finally:
        container.close()
    return candidates


def _wait_until_settled(
    producer: KafkaProducer,
    events_topic: str,
    first_event: dict[str, Any],
    worker: subprocess.Popen[bytes],
    sampler: psutil.Process,
    log_path: Path,
) -> None:
    """Ready: a probe event's customer has been applied (the group joined, models loaded)."""
    probe = first_event | {"event_id": f"p-{uuid.uuid4()}"}
    deadline = time.monotonic() + READY_TIMEOUT_S
    producer.send(events_topic, key=probe["customer_id"].encode(), value=json.dumps(probe).encode())
    producer.flush()
    time.sleep(5.0)
    while sampler.cpu_percent(interval=1.0) > 20.0:  # building the container, joining
        if time.monotonic() > deadline or worker.poll() is not None:
            raise RuntimeError(f"the stream worker did not settle: {log_path}")


@dataclass
class _Load:
    sent: dict[str, float]  # event id -> when it was sent
    scenario_customers: list[str]
    elapsed: float


def _send_load(
    producer: KafkaProducer,
    events_topic: str,
    background: list[dict[str, Any]],
    scenario_candidates: list[str],
    args: argparse.Namespace,
) -> _Load:
    """The background events at ``args.rate``, with a seeded scenario interleaved every
    ``1 / args.scenarios`` seconds for the first customers of ``scenario_candidates``."""
    sent: dict[str, float] = {}
    scenario_customers: list[str] = []
    began = time.perf_counter()
    for i, event in enumerate(background):
        pause = began + i / args.rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        batch = [event]
        due = len(scenario_customers)
        if due < len(scenario_candidates) and i >= due * args.rate / args.scenarios:
            who = scenario_candidates[due]
            scenario_customers.append(who)
            batch += seed_scenario(who, datetime.now(UTC), views=4)
        for item in batch:
            producer.send(
                events_topic,
                key=item["customer_id"].encode(),
                value=json.dumps(item).encode(),
            )
            sent[item["event_id"]] = time.perf_counter()
    producer.flush()
    return _Load(sent, scenario_customers, time.perf_counter() - began)


def _alerts_received(
    arrivals: list[tuple[float, dict[str, Any]]], sent: dict[str, float]
) -> tuple[list[float], Counter[str], set[str]]:
    """Event-to-alert latencies, alerts by action and the customers alerted, counting the
    alerts raised (open or queued), not their later dispositions."""
    latencies: list[float] = []
    by_action: Counter[str] = Counter()
    alerted: set[str] = set()
    for arrived, alert in arrivals:
        if alert.get("status") not in ("open", "queued") or alert.get("disposition"):
            continue
        by_action[alert["action_id"]] += 1
        alerted.add(alert["customer_id"])
        origin = alert.get("origin") or {}
        if origin.get("event_id") in sent:
            latencies.append(arrived - sent[origin["event_id"]])
    return latencies, by_action, alerted


def compare_in_process(state: State, backends: Backends, events: int, seed: int) -> dict[str, Any]:
    """CPU per event: ours (one debounced rescoring per customer, the gate on a crossing) and
    the naive way (a gated, logged RM decision for every event), on the same customers."""
    container = Container(load_settings(environment(state, backends)))
    try:
        rng = random.Random(seed)
        customers = json.loads((state.home / "decision-customers.json").read_text())
        # Bursts as the stream delivers them: a few events per customer.
        stream = [c for c in rng.sample(customers, events // 4) for _ in range(4)]
        alerter = container.alerter
        alerter.feed.send = None
        origin = Origin("bench", "bench", 0, 0)
        assert alerter.decisions.models and container.decisions  # loaded before timing
        began = time.process_time()
        for start in range(0, len(stream), 500):  # one debounce window's worth at a time
            alerter.process(dict.fromkeys(stream[start : start + 500], origin))
        ours = (time.process_time() - began) * 1000 / len(stream)
        began = time.process_time()
        naive_events = stream[: min(len(stream), 400)]
        for customer in naive_events:
            container.decisions.decide(
                DecideForCustomer(customer_id=customer, channel="rm", limit=3)
            )
        naive = (time.process_time() - began) * 1000 / len(naive_events)
        return {
            "events": len(stream),
            "ours_cpu_ms_per_event": round(ours, 3),
            "naive_cpu_ms_per_event": round(naive, 3),
            "naive_over_ours": round(naive / ours, 1) if ours else None,
            "ours_events_per_core_second": round(1000 / ours) if ours else None,
            "naive_events_per_core_second": round(1000 / naive) if naive else None,
            "alerter": alerter.stats.as_dict(),
        }
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="A state kept by bench.decide.")
    parser.add_argument("--redis-url", default=os.environ.get("TEST_REDIS_URL", ""))
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", ""))
    parser.add_argument("--kafka", default=os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS", ""))
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--scenarios", type=float, default=2.0, help="Seed scenarios a second.")
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    parser.add_argument("--naive-events", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if not (args.redis_url and args.database_url and args.kafka):
        raise SystemExit('needs Kafka, Redis and PostgreSQL: eval "$(scripts/services env)"')
    backends = Backends(args.redis_url, args.database_url)
    state = State.load(args.home)
    result: dict[str, Any] = {
        "benchmark": "alerts",
        "target_p99_seconds": TARGET_P99_S,
        "load_before": machine_load(),
        "stream": run_stream(state, backends, args.kafka, args),
        "in_process": compare_in_process(state, backends, args.naive_events, args.seed),
        "load_after": machine_load(),
    }
    emit(result)


if __name__ == "__main__":
    main()
