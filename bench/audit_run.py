"""One run of the audit benchmark: writer threads (in one process or several, like API
workers sharing one chain) append for a fixed time on a fresh database, then the chain is
verified and every acknowledged decision looked up."""

from __future__ import annotations

import multiprocessing
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, func, insert, make_url, select, text

from bench.audit_records import Decisions
from consent.rules.chain import Appended
from consent.rules.checkpoints import Publication, open_publication
from consent.rules.record import DecisionRecord
from consent.rules.signed_note import Signer
from consent.stores.audit.checkpointer import Checkpointer, CheckpointPolicy
from consent.stores.audit.failures import AuditWriteFailed
from consent.stores.audit.log import AuditLog
from consent.stores.audit.pending import PendingRecord
from consent.stores.audit.sinks import FolderSink
from consent.stores.store import connect
from consent.stores.tables import audit_log, customer_keys
from consent.verify_audit import VerifierKey

#: Records made ahead per writer thread and second of a run (more than any thread writes).
PREBUILT_PER_THREAD_SECOND = 600
ORIGIN = "bench.nextbest/audit"
#: One key for every process of a run (a deployment's processes share theirs).
SIGNER = Signer.generate(ORIGIN)


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


def writer(naive: bool, engine: Engine, checkpoints: Path | None, key: str) -> AuditLog:
    """The log a process writes through: naive, group commit, or group commit publishing
    signed checkpoints (the embedded default policy, to a folder) to ``checkpoints``."""
    if naive:
        return NaiveAuditLog(engine)
    if checkpoints is None:
        return AuditLog(engine)
    signer = Signer.parse(key)
    policy = CheckpointPolicy(ORIGIN)
    checkpointer = Checkpointer(engine, lambda: signer, policy, [FolderSink(checkpoints)])
    return AuditLog(engine, checkpointer=checkpointer)


def drive_process(
    naive: bool,
    url: str,
    threads: int,
    seconds: float,
    seed: int,
    ready: Any,
    out: Any,
    checkpoints: Path | None,
    key: str,
) -> None:
    """One API process: its own engine and log (run with the spawn start method)."""
    engine = connect(url)
    log = writer(naive, engine, checkpoints, key)
    lane = drive(log, threads, seconds, seed, ready.wait)
    log.close()  # a graceful shutdown: its last checkpoint is published
    out.put(lane)
    engine.dispose()


def run_once(
    naive: bool,
    url: str,
    scratch: Path,
    threads: int,
    seconds: float,
    cold_keys: bool,
    processes: int = 1,
    signed: bool = False,
) -> dict[str, Any]:
    """``processes`` processes of ``threads`` writer threads each, on a fresh database; with
    ``signed``, each publishes signed checkpoints as it writes."""
    checkpoints = scratch / f"checkpoints-{uuid.uuid4().hex[:8]}" if signed else None
    key = SIGNER.encoded()
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
            log = writer(naive, engine, checkpoints, key)
            lanes = [drive(log, threads, seconds, 1, lambda: None)]
            log.close()
        else:
            spawn = multiprocessing.get_context("spawn")
            ready, out = spawn.Barrier(processes), spawn.Queue()
            children = [
                spawn.Process(
                    target=drive_process,
                    args=(naive, scoped_url, threads, seconds, n + 1, ready, out, checkpoints, key),
                )
                for n in range(processes)
            ]
            for child in children:
                child.start()
            lanes = [out.get() for _ in children]
            for child in children:
                child.join()
        heads = _heads(checkpoints)
        verified = AuditLog(engine).verify(heads=heads)
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
        "signed_checkpoints": len(heads) if signed else None,
        # Every record covered by a published checkpoint once the writers shut down.
        "covered": verified.covered if signed else None,
    }


def _heads(folder: Path | None) -> list[Any]:
    if folder is None:
        return []
    key = VerifierKey.parse(SIGNER.verifier_key())
    found = [p for _, p in FolderSink(folder).read() if isinstance(p, Publication)]
    return [open_publication(p, [key], ORIGIN) for p in found]
