"""Benchmark: the audit log's writer, one transaction per append against group commit.

``--threads`` writer threads (in each of ``--processes`` processes, like API workers sharing one
chain) append realistic decision records for ``--seconds``: ten candidates with the policy's
fifteen rule outcomes each, every scoring feature, consents, models and the gate's inputs
(about 15 kB of JSON), for customers
drawn from a pool of 20,000 who already have their pseudonymisation keys (``--cold-keys``: the
first decisions make them). Measures, in the same run, each on a fresh database (a new schema
on PostgreSQL):

- the naive writer (the algorithm before group commit: a transaction per append that reads the
  head, inserts and retries when another writer took that head first);
- group commit (``AuditLog``);

decisions/s (median of ``--repeat`` runs), per-append latency p50/p99, the writers' CPU per
decision (what bounds one process under the GIL, whatever else runs on the machine; each run
also records the load average it started at), the mean group size, the speedup, and whether
group commit sustains 2,000 decisions/s on PostgreSQL. Every run's chain is verified, and its
seqs checked to be 1..N with every acknowledged decision present once.

    python -m bench.audit --database-url "$TEST_DATABASE_URL"
    python -m bench.audit --database-url "$TEST_DATABASE_URL" --processes 2
    python -m bench.audit --database-url sqlite --smoke

``--database-url`` defaults to ``TEST_DATABASE_URL``, else ``sqlite`` (a file in a temporary
folder; any SQLite URL means that).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import secrets
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, func, insert, make_url, select, text

from bench.common import emit, median
from consent.rules.chain import Appended
from consent.rules.model import (
    Candidate,
    ConsentGiven,
    ContactRecord,
    CustomerFacts,
    DecisionRecord,
    FeatureValue,
    GateInputs,
    ModelUsed,
    RuleOutcome,
)
from consent.stores.audit.failures import AuditWriteFailed
from consent.stores.audit.log import AuditLog
from consent.stores.audit.pending import PendingRecord
from consent.stores.store import audit_log, connect, customer_keys
from feature_repo.definitions import SCORING_FEATURES

#: The issue's requirement for the writer on PostgreSQL.
TARGET_PER_SECOND = 2_000
CUSTOMERS = 20_000
M = TypeVar("M", bound=BaseModel)

#: The policy's fifteen rules (consent/policy.yaml), each evaluated for every candidate.
RULES = (
    ("consent.purpose_channel", "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL"),
    ("consent.profiling", "NO_PROFILING_CONSENT"),
    ("customer.do_not_contact", "DO_NOT_CONTACT"),
    ("customer.vulnerable", "VULNERABLE_CUSTOMER"),
    ("customer.kyc", "KYC_INCOMPLETE"),
    ("customer.aml", "AML_FLAG"),
    ("lending.affordability", "ARREARS_OR_HIGH_DEBT"),
    ("investment.suitability", "UNSUITABLE_INVESTMENT"),
    ("product.age_limits", "AGE_LIMIT"),
    ("product.held_or_in_flight", "ALREADY_HELD_OR_IN_FLIGHT"),
    ("contact.caps", "CONTACT_CAP_REACHED"),
    ("contact.cooloff", "DECLINED_RECENTLY"),
    ("contact.quiet_hours", "QUIET_HOURS"),
    ("customer.open_complaint", "OPEN_COMPLAINT"),
    ("model.min_score", "SCORE_BELOW_THRESHOLD"),
)
ACTIONS = (
    ("mortgage_consultation", "mortgage", "sales", 900.0),
    ("mortgage_rate_switch", "mortgage", "sales", 400.0),
    ("investment_review", "investment", "sales", 600.0),
    ("life_cover_quote", "protection", "sales", 300.0),
    ("card_upgrade", "credit_card", "sales", 150.0),
    ("loan_preapproval", "personal_loan", "sales", 350.0),
    ("term_deposit_offer", "term_deposit", "sales", 120.0),
    ("pension_review", "pension", "sales", 500.0),
    ("fraud_alert_setup", None, "service", 50.0),
    ("kyc_refresh", None, "regulatory", 10.0),
)
#: Records made ahead per writer thread and second of a run (more than any thread writes).
PREBUILT_PER_THREAD_SECOND = 600
#: The features a real decision records: every scoring feature of the online store.
FEATURES = SCORING_FEATURES


def build(model: type[M], **values: Any) -> M:
    """``model(**values)`` that survives the domain gaining fields (a rule version, say): fields
    the model lacks are left out, required ones not given get a placeholder if they are text."""
    fields = model.model_fields
    given = {name: value for name, value in values.items() if name in fields}
    for name, info in fields.items():
        if name not in given and info.is_required():
            if info.annotation is not str:
                raise TypeError(
                    f"{model.__name__}.{name} is required; the benchmark cannot fill it"
                )
            given[name] = "bench-1"
    return model(**given)


class Decisions:
    """Realistic decision records, quick to make: one template per channel, copied with a new
    decision id and customer (model_copy does not validate again)."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        now = datetime.now(UTC)
        self.customers = [f"C{n:07d}" for n in range(1, CUSTOMERS + 1)]
        self._consents: dict[str, tuple[ConsentGiven, ...]] = {}
        self.consents = tuple(
            build(
                ConsentGiven,
                customer_id="C0000000",
                purpose=purpose,
                channel=channel,
                granted=True,
                recorded_at=now - timedelta(days=rng.randrange(30, 900)),
                source="branch_form",
                notice_version="2026-01",
                id=rng.randrange(1, 10**7),
            )
            for purpose, channel in (
                ("marketing", "mobile_app"),
                ("service", "mobile_app"),
                ("profiling", "any"),
            )
        )
        candidates = []
        for i, (action_id, need, kind, value) in enumerate(ACTIONS):
            score = round(rng.random(), 6) if need else None
            rules = tuple(
                build(
                    RuleOutcome,
                    rule_id=rule_id,
                    passed=(i + j) % 7 != 0,
                    reason_code=None if (i + j) % 7 else code,
                    detail=f"{rule_id}: holds for this customer and channel"
                    if (i + j) % 7
                    else f"{rule_id}: does not hold, the action is suppressed",
                    rule_version="sha256:" + hashlib.sha256(rule_id.encode()).hexdigest(),
                )
                for j, (rule_id, code) in enumerate(RULES)
            )
            candidates.append(
                build(
                    Candidate,
                    action_id=action_id,
                    need=need,
                    kind=kind,
                    score=score,
                    value=value,
                    priority=round((score or 1.0) * value, 6),
                    rules=rules,
                    delivered=i < 2,
                )
            )
        features = tuple(
            build(
                FeatureValue,
                name=name,
                value=round(rng.uniform(0, 5000), 2),
                as_of=now - timedelta(seconds=90),
                age_seconds=90.0,
            )
            for name in FEATURES
        )
        models = tuple(
            build(
                ModelUsed, need=need, name=f"nextbest-{need}", version="7", run_id=uuid.uuid4().hex
            )
            for need in ("mortgage", "investment", "protection")
        )
        self.template = build(
            DecisionRecord,
            decision_id="template",
            decided_at=now,
            trigger={
                "kind": "event",
                "event_id": str(uuid.uuid4()),
                "kafka": {"topic": "nextbest.events", "partition": 3, "offset": 1_234_567},
            },
            customer_ref="C0000000",
            channel="mobile_app",
            candidates=tuple(candidates),
            delivered=tuple(c.action_id for c in candidates if c.delivered),
            consents_relied_on=self.consents,
            features=features,
            models=models,
            policy_version="sha256:" + "ab" * 32,
            code_version="0.1.0",
            fallback=None,
            reason_codes=tuple(sorted({code for _, code in RULES})),
            delivery_status="delivered",
            gate=build(
                GateInputs,
                facts=build(
                    CustomerFacts,
                    age=41,
                    income=72_000.0,
                    timezone="Asia/Shanghai",
                    kyc_status="complete",
                    debt_to_income=0.21,
                    risk_level=3,
                    risk_assessed_at=now - timedelta(days=200),
                    holds=("protection",),
                ),
                contacts=tuple(
                    build(
                        ContactRecord,
                        occurred_at=now - timedelta(days=d),
                        channel="mobile_app",
                        kind="impression",
                        action_id="mortgage_consultation",
                        need="mortgage",
                    )
                    for d in (2, 9, 17)
                ),
                in_flight=(),
                limit=3,
            ),
            rule_versions={
                rule_id: "sha256:" + hashlib.sha256(rule_id.encode()).hexdigest()
                for rule_id, _ in RULES
            },
        )

    def make(self, rng: random.Random) -> DecisionRecord:
        # Making the input should cost the writer under test as little CPU as possible: the
        # customers' consents are copied once, and the id is a version-4 UUID from ``rng``
        # (uuid4 reads os.urandom, slower here than everything else this does).
        customer = rng.choice(self.customers)
        consents = self._consents.get(customer)
        if consents is None:
            consents = tuple(c.model_copy(update={"customer_id": customer}) for c in self.consents)
            self._consents[customer] = consents
        return self.template.model_copy(
            update={
                "decision_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "decided_at": datetime.now(UTC),
                "customer_ref": customer,
                "consents_relied_on": consents,
            }
        )


class NaiveAuditLog(AuditLog):
    """The writer before group commit, kept as the baseline: every append is its own
    transaction that reads the head, inserts, and retries if another writer took that head."""

    def append(self, record: DecisionRecord, customer_id: str | None = None) -> Appended:
        request = PendingRecord.of(record, customer_id)
        (outcome,) = self.writer.write([request], serialise=False, atomic=False)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@contextmanager
def fresh_database(url: str, scratch: Path) -> Iterator[tuple[Engine, str]]:
    """An engine on an empty operational store, and the URL a second engine would use."""
    if url.startswith("sqlite"):
        db_url = f"sqlite:///{scratch / f'audit-{uuid.uuid4().hex[:8]}.db'}"
        engine = connect(db_url)
        try:
            yield engine, db_url
        finally:
            engine.dispose()
        return
    schema = f"bench_audit_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"create schema {schema}"))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    scoped_url = scoped.render_as_string(hide_password=False)
    engine = connect(scoped_url)
    try:
        yield engine, scoped_url
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


@dataclass
class Lane:
    """What one process's writer threads did in a run."""

    latencies: list[float] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    appends: int = 0
    transactions: int = 0


def drive(
    log: AuditLog, threads: int, seconds: float, seed: int, ready: Callable[[], object]
) -> Lane:
    """``threads`` threads append to ``log`` for ``seconds`` once ``ready()`` returns."""
    decisions = Decisions()
    warm = random.Random(seed)
    for _ in range(threads):  # open the pool's connections before the clock starts
        log.append(decisions.make(warm))
    lanes = [Lane() for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    # The records are made before the clock starts: what is measured is the writer, not the
    # load generator (making one took a sixth of the process's time under the GIL).
    rngs = [random.Random(seed * 1000 + i + 1) for i in range(threads)]
    budget = int(PREBUILT_PER_THREAD_SECOND * seconds)
    prebuilt = [[decisions.make(rng) for _ in range(budget)] for rng in rngs]

    def write(i: int) -> None:
        rng, lane, ready_made = rngs[i], lanes[i], iter(prebuilt[i])
        start.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            record = next(ready_made, None) or decisions.make(rng)
            began = time.perf_counter()
            try:
                log.append(record)
            except AuditWriteFailed:
                lane.failures += 1
                continue
            lane.latencies.append(time.perf_counter() - began)
            lane.acknowledged.append(record.decision_id)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    ready()
    start.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.join()
    total = Lane(seconds=time.perf_counter() - began, cpu_seconds=time.process_time() - cpu)
    for lane in lanes:
        total.latencies += lane.latencies
        total.acknowledged += lane.acknowledged
        total.failures += lane.failures
    total.appends, total.transactions = log.stats.appends, log.stats.transactions
    return total


def drive_process(
    naive: bool, url: str, threads: int, seconds: float, seed: int, ready: Any, out: Any
) -> None:
    """One API process: its own engine and log (run with the spawn start method)."""
    engine = connect(url)
    log = NaiveAuditLog(engine) if naive else AuditLog(engine)
    out.put(drive(log, threads, seconds, seed, ready.wait))
    engine.dispose()


def run_once(
    naive: bool,
    url: str,
    scratch: Path,
    threads: int,
    seconds: float,
    cold_keys: bool,
    processes: int = 1,
) -> dict[str, Any]:
    """``processes`` processes of ``threads`` writer threads each, on a fresh database."""
    with fresh_database(url, scratch) as (engine, scoped_url):
        if not cold_keys:  # steady state: the customers have had decisions before
            now = datetime.now(UTC)
            keys = [
                {"customer_id": c, "key": secrets.token_bytes(32), "created_at": now}
                for c in Decisions().customers
            ]
            with engine.begin() as connection:
                connection.execute(insert(customer_keys), keys)
        load = os.getloadavg()[0]  # other work on the machine takes CPU from this run
        if processes == 1:
            log = NaiveAuditLog(engine) if naive else AuditLog(engine)
            lanes = [drive(log, threads, seconds, 1, lambda: None)]
        else:
            spawn = multiprocessing.get_context("spawn")
            ready, out = spawn.Barrier(processes), spawn.Queue()
            children = [
                spawn.Process(
                    target=drive_process,
                    args=(naive, scoped_url, threads, seconds, n + 1, ready, out),
                )
                for n in range(processes)
            ]
            for child in children:
                child.start()
            lanes = [out.get() for _ in children]
            for child in children:
                child.join()
        verified = AuditLog(engine).verify()
        with engine.connect() as connection:
            first, last, count = connection.execute(
                select(func.min(audit_log.c.seq), func.max(audit_log.c.seq), func.count())
            ).one()
            logged = set(connection.execute(select(audit_log.c.decision_id)).scalars())
            mean_length = select(func.avg(func.length(audit_log.c.body)))
            record_bytes = int(connection.execute(mean_length).scalar() or 0)
    every = [d for lane in lanes for d in lane.acknowledged]
    elapsed = max(lane.seconds for lane in lanes)
    latencies = np.array([x for lane in lanes for x in lane.latencies]) * 1000
    appends = sum(lane.appends for lane in lanes)
    transactions = sum(lane.transactions for lane in lanes)
    return {
        "decisions": len(every),
        "seconds": round(elapsed, 3),
        "decisions_per_second": round(len(every) / elapsed),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        # The writers' CPU per decision (the database server's is not in it): under the GIL
        # it bounds what one process can do, whatever the machine's load.
        "cpu_ms_per_decision": round(
            sum(lane.cpu_seconds for lane in lanes) * 1000 / max(len(every), 1), 3
        ),
        "load_average_before": round(load, 2),
        "failed_appends": sum(lane.failures for lane in lanes),
        "chain_ok": verified.ok,
        "seqs_contiguous": (first, last) == (1, count) and count == verified.records,
        # decision_id is unique in the table, so "present" is "present once".
        "every_acknowledged_decision_logged_once": len(set(every)) == len(every)
        and set(every) <= logged,
        "mean_group": 1.0 if naive else round(appends / max(transactions, 1), 1),
        "record_bytes": record_bytes,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "decisions_per_second_runs": [r["decisions_per_second"] for r in runs],
        "decisions_per_second_median": round(median([r["decisions_per_second"] for r in runs])),
        "p50_ms_median": round(median([r["p50_ms"] for r in runs]), 2),
        "p99_ms_median": round(median([r["p99_ms"] for r in runs]), 2),
        "cpu_ms_per_decision_median": round(median([r["cpu_ms_per_decision"] for r in runs]), 3),
        "failed_appends": sum(r["failed_appends"] for r in runs),
        "mean_group_median": median([r["mean_group"] for r in runs]),
        "verified": all(
            r["chain_ok"] and r["seqs_contiguous"] and r["every_acknowledged_decision_logged_once"]
            for r in runs
        ),
        "runs": runs,
    }


def server_settings(url: str) -> dict[str, str]:
    """What a commit costs depends on these; the loopback test server turns durability off."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                name: str(connection.exec_driver_sql(f"show {name}").scalar())
                for name in ("server_version", "fsync", "synchronous_commit")
            }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL") or "sqlite")
    # An API process has many decisions in flight: Little's law (the target rate times an
    # append's latency under load) gives about 16 (Starlette's thread pool allows 40).
    parser.add_argument("--threads", type=int, default=16, help="Writer threads per process.")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Processes, each with its own engine and log, on one chain (like API workers).",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="Per run.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cold-keys",
        action="store_true",
        help="Customers have no pseudonymisation key yet (their first decisions make them).",
    )
    parser.add_argument("--smoke", action="store_true", help="Tiny runs, to check it works.")
    args = parser.parse_args()
    if args.smoke:
        args.threads, args.seconds, args.repeat = min(args.threads, 4), 0.3, 1

    url = args.database_url
    backend = "sqlite" if url.startswith("sqlite") else make_url(url).get_backend_name()
    result: dict[str, Any] = {
        "benchmark": "audit",
        "backend": backend,
        "processes": args.processes,
        "threads_per_process": args.threads,
        "seconds_per_run": args.seconds,
        "repeat": args.repeat,
        "customers": CUSTOMERS,
        "customer_keys": "made by the first decisions" if args.cold_keys else "existing",
    }
    if backend == "postgresql":
        result["server"] = server_settings(url)
    with tempfile.TemporaryDirectory() as scratch:
        for name, naive in (("naive", True), ("group_commit", False)):
            runs = [
                run_once(
                    naive,
                    url,
                    Path(scratch),
                    args.threads,
                    args.seconds,
                    args.cold_keys,
                    args.processes,
                )
                for _ in range(args.repeat)
            ]
            result[name] = summary(runs)
    result["record_bytes"] = result["group_commit"]["runs"][0]["record_bytes"]
    naive_rate = result["naive"]["decisions_per_second_median"]
    group_rate = result["group_commit"]["decisions_per_second_median"]
    result["speedup_vs_naive"] = round(group_rate / naive_rate, 1) if naive_rate else None
    result["target_decisions_per_second"] = TARGET_PER_SECOND
    result["meets_target_on_postgresql"] = (
        group_rate >= TARGET_PER_SECOND if backend == "postgresql" else None
    )
    emit(result)


if __name__ == "__main__":
    main()
