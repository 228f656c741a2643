"""The stream worker against real Kafka and real Redis: the online features equal a reference
recomputation over the same events, as of the day the watermarks reached (the timers moved every
customer's windows on from the bank's last day, weeks ago, to today), even when the worker is
SIGKILLed twenty times mid-run and when the broker is restarted mid-stream; every malformed event
reaches the dead-letter topic."""

from __future__ import annotations

import contextlib
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from feature_repo.activity import FEATURE_NAMES
from feature_repo.events import InvalidEvent, parse_event
from feature_repo.reference import reference_features
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC
from service.bootstrap import Container
from tests.conftest import make_settings
from training.bank.in_memory import generate
from training.bank.spec import BankSpec

ROOT = Path(__file__).parents[2]
NEXTBEST = str(Path(sys.executable).with_name("nextbest"))
KILLS = 20


@pytest.fixture
def stack(tmp_path, kafka_bootstrap, redis_url):
    run = uuid.uuid4().hex[:10]
    overrides = {
        "event_transport": "kafka",
        "kafka_bootstrap_servers": kafka_bootstrap,
        "topic_namespace": f"t{run}.",
        "consumer_group": f"stream-{run}",
        "online_store": "redis",
        "redis_url": redis_url,
        "feast_project": f"t{run}",
    }
    settings = make_settings(tmp_path / "home", **overrides)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env.update({f"NEXTBEST_{k.upper()}": v for k, v in overrides.items()})
    env["NEXTBEST_HOME"] = str(settings.home)
    env["NEXTBEST_LOG_LEVEL"] = "WARNING"
    container = Container(settings)
    container.feature_store  # noqa: B018 - registers the feature view before workers start
    return container, env


def _records(seed: int, customers: int, days: int) -> tuple[list[tuple[str | None, bytes]], int]:
    bank = generate(BankSpec(seed=seed, customers=customers, days=days, malformed_fraction=0.01))
    return [(k, v) for _, k, v in bank.records()], bank.summary["malformed_events"]


def _produce(bootstrap: str, topic: str, records, rate: float | None = None) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        retries=1_000_000,
        retry_backoff_ms=200,
        delivery_timeout_ms=180_000,
        request_timeout_ms=10_000,
    )
    began = time.monotonic()
    for i, (key, value) in enumerate(records):
        producer.send(topic, key=None if key is None else key.encode(), value=value)
        if rate:
            wait = began + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    producer.flush(timeout=180)
    producer.close()


def _worker(
    env: dict[str, str], idle: float | None = None, quiet: bool = False
) -> subprocess.Popen[str]:
    command = [NEXTBEST, "stream"] + ([] if idle is None else ["--until-idle", str(idle)])
    pipe = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=pipe, stderr=pipe, text=True)


def _check(container: Container, records, malformed: int, bootstrap: str) -> None:
    valid = []
    for _, value in records:
        with contextlib.suppress(InvalidEvent):
            valid.append(parse_event(value))
    # The bank ended weeks ago: its customers' rows are as of the day the workers' watermarks
    # reached (their timers moved the windows on), which the last worker published on leaving.
    published = container.watermark_store().read()
    assert published, "no worker published its watermark"
    days = {at // 86_400_000_000 for at in published.values()}
    assert len(days) == 1, published
    now = datetime.fromtimestamp(min(published.values()) / 1e6, UTC)
    assert now.date() >= datetime.now(UTC).date() - timedelta(days=1)
    expected = reference_features(valid, now=now)
    store = container.feature_store
    customers = sorted(expected)
    online = store.get_online_features(
        features=[f"customer_activity:{n}" for n in FEATURE_NAMES],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict(include_event_timestamps=True)
    mismatches: list[tuple[str, str, object, object]] = []
    for i, customer in enumerate(customers):
        as_of, values = expected[customer]
        if online["inflow_1d__ts"][i] != int(as_of.timestamp()):
            mismatches.append((customer, "as_of", online["inflow_1d__ts"][i], as_of))
        for name in FEATURE_NAMES:
            if online[name][i] is None or abs(online[name][i] - values[name]) > 1e-6 * max(
                1, abs(values[name])
            ):
                mismatches.append((customer, name, online[name][i], values[name]))
    assert mismatches == [], mismatches[:10]

    consumer = KafkaConsumer(
        container.settings.topic(DLQ_TOPIC),
        bootstrap_servers=bootstrap,
        group_id=f"check-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
    )
    letters = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert all(letter["reason"] and letter["origin"]["topic"] for letter in letters)
    dead = Counter(letter["value"] for letter in letters)
    bad: Counter[str] = Counter()
    for _, value in records:
        try:
            parse_event(value)
        except InvalidEvent:
            bad[value.decode("utf-8", "replace")] += 1
    assert sum(bad.values()) == malformed
    # Every malformed event is in the dead-letter topic (redeliveries may add copies).
    assert all(dead[value] >= count for value, count in bad.items())


def _producing(container: Container, bootstrap: str, records, seconds: float) -> threading.Thread:
    """Produce ``records`` to the events topic over about ``seconds``, in the background."""
    topic = container.settings.topic(EVENTS_TOPIC)
    producer = threading.Thread(
        target=_produce, args=(bootstrap, topic, records, len(records) / seconds)
    )
    producer.start()
    return producer


def _drain_and_check(container: Container, env, records, malformed: int, bootstrap: str) -> None:
    """Run a worker until the topic is drained, then compare everything with the reference.
    It stays idle longer than the group's session timeout: the partitions of killed workers
    come to it, and with them their timers, which it fires before it leaves."""
    final = _worker(env, idle=15)
    _out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    _check(container, records, malformed, bootstrap)


@pytest.mark.kafka
@pytest.mark.redis
def test_exactly_once_effect_through_twenty_sigkills(stack, kafka_bootstrap) -> None:
    container, env = stack
    records, malformed = _records(seed=41, customers=300, days=45)
    producer = _producing(container, kafka_bootstrap, records, seconds=60)
    rng = random.Random(7)
    for _ in range(KILLS):
        worker = _worker(env, quiet=True)
        time.sleep(rng.uniform(3.0, 9.0))  # sometimes while starting, mostly mid-batch
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    producer.join()
    _drain_and_check(container, env, records, malformed, kafka_bootstrap)


@pytest.mark.kafka
@pytest.mark.redis
def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(stack, kafka_bootstrap) -> None:
    container, env = stack
    records, malformed = _records(seed=43, customers=300, days=30)
    producer = _producing(container, kafka_bootstrap, records, seconds=25)
    worker = _worker(env)
    # Mid-stream: once the worker has committed (it starts in a few seconds when the machine
    # is quiet, and took more than 8 on a busy one, when the broker was already gone).
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    group = container.settings.consumer_group
    deadline = time.monotonic() + 60
    while not admin.list_group_offsets(group).get(group):
        assert worker.poll() is None and time.monotonic() < deadline, "the worker never committed"
        time.sleep(0.5)
    admin.close()
    services = ROOT / "scripts" / "services"
    subprocess.run([str(services), "stop", "kafka"], check=True, capture_output=True)
    time.sleep(2)
    subprocess.run([str(services), "start", "kafka"], check=True, capture_output=True)
    producer.join()
    time.sleep(8)
    worker.send_signal(signal.SIGTERM)  # graceful: finish the batch, commit, leave the group
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["events"] > 0
    # Whatever SIGTERM left uncommitted comes again, harmlessly.
    _drain_and_check(container, env, records, malformed, kafka_bootstrap)


@pytest.mark.kafka
@pytest.mark.redis
def test_consent_changes_from_kafka_reach_the_registry(stack, kafka_bootstrap) -> None:
    container, env = stack

    def change(event_id: str, granted: bool, at: str) -> tuple[str, bytes]:
        event = {
            "event_id": event_id,
            "customer_id": "C0000777",
            "type": "consent_changed",
            "occurred_at": at,
            "channel": "web",
            "payload": {
                "purpose": "marketing",
                "channel": "sms",
                "granted": granted,
                "source": "web_preferences",
                "notice_version": "2026-09",
            },
        }
        return "C0000777", json.dumps(event).encode()

    records = [
        change("k1", True, "2026-11-20T10:00:00Z"),
        change("k2", False, "2026-11-21T10:00:00Z"),
    ]
    _produce(kafka_bootstrap, container.settings.topic(EVENTS_TOPIC), records)
    worker = _worker(env, idle=4)
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["consents"] == 2, (out, err[-3000:])
    state = container.registry.current("C0000777")[("marketing", "sms")]
    assert state.granted is False and state.source == "web_preferences"
    assert [e.granted for e in container.registry.history("C0000777")] == [True, False]
