"""Benchmark: the audit log's proofs at scale, and the tree's rebuild after a restart.

Writes ``--records`` decision records (short ones, one candidate: the tree holds one leaf per
record whatever its size) to a fresh operational store, publishes signed checkpoints of the
whole log as a writer that starts after them does (``Checkpointer.publish``: in pieces of 8,192
leaves), then in a new ``Proofs``, as a restarted API has it:

- the tree's rebuild from the stored leaf hashes: seconds, the tree's bytes and the process's
  resident memory before and after;
- ``--proofs`` inclusion proofs of random records to the newest checkpoint and ``--proofs``/10
  consistency proofs between random published checkpoints, each timed as the API makes it
  (the record read from the database, the proof from the tree, the checkpoint's note), p50 and
  p99, and each checked by the stand-alone verifier (outside the timing);
- the naive way beside it: a proof made by reading every leaf hash and building the tree for
  it (what a service keeping no tree would do), a few times.

    python -m bench.audit_proofs --database-url "$TEST_DATABASE_URL"
    python -m bench.audit_proofs --database-url sqlite --records 20000 --proofs 200
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import make_url

from bench.audit_run import ORIGIN, SIGNER, fresh_database
from bench.common import emit
from consent import verify_audit
from consent.rules.merkle import Tree
from consent.rules.record import DecisionRecord
from consent.stores.audit import reads
from consent.stores.audit.checkpointer import Checkpointer, CheckpointPolicy
from consent.stores.audit.log import AuditLog
from consent.stores.audit.proofs import Checkpoints, Proofs
from consent.stores.audit.sinks import FolderSink

#: The issue's bound on a proof's p99 at a million records.
TARGET_P99_MS = 5.0
BATCH = 5_000


def _record(rng: random.Random) -> DecisionRecord:
    return DecisionRecord(
        decision_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        decided_at=datetime.now(UTC),
        trigger={"kind": "bench"},
        customer_ref=f"C{rng.randrange(200_000):07d}",
        channel="mobile_app",
        candidates=(),
        delivered=(),
        consents_relied_on=(),
        features=(),
        models=(),
        policy_version="sha256:bench",
        code_version="bench",
        fallback=None,
        reason_codes=(),
        delivery_status="nothing_to_deliver",
    )


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def run(url: str, records: int, proofs: int, naive: int, scratch: Path) -> dict[str, Any]:
    rng = random.Random(7)
    key = verify_audit.VerifierKey.parse(SIGNER.verifier_key())
    sink = FolderSink(scratch / "checkpoints")
    result: dict[str, Any] = {}
    with fresh_database(url, scratch) as (engine, _):
        log = AuditLog(engine)
        ids: list[str] = []
        began = time.perf_counter()
        while len(ids) < records:
            batch = [_record(rng) for _ in range(min(BATCH, records - len(ids)))]
            ids += [a.decision_id for a in log.append_many(batch)]
        result["write_seconds"] = round(time.perf_counter() - began, 1)

        checkpointer = Checkpointer(engine, lambda: SIGNER, CheckpointPolicy(ORIGIN), [sink])
        began = time.perf_counter()
        published = checkpointer.publish()
        result["checkpoints_published"] = len(published)
        result["publish_all_seconds"] = round(time.perf_counter() - began, 2)
        sizes = [p.size for p in published]

        service = Proofs(engine, Checkpoints([sink], lambda: [key], ORIGIN))
        rss_before = _rss_bytes()
        began = time.perf_counter()
        tree = service.tree()
        result["rebuild"] = {
            "records": tree.size,
            "seconds": round(time.perf_counter() - began, 2),
            "tree_bytes": tree.memory,
            "tree_bytes_per_record": round(tree.memory / max(tree.size, 1), 1),
            "rss_growth_bytes": _rss_bytes() - rss_before,
        }

        inclusion, checked = [], 0
        for decision_id in rng.sample(ids, proofs):
            began = time.perf_counter()
            proof = service.inclusion(decision_id, records)
            inclusion.append(time.perf_counter() - began)
            verify_audit.check_inclusion(proof, key)  # raises if it does not hold
            checked += 1
        result["inclusion"] = _percentiles(inclusion) | {"proofs": proofs, "verified": checked}

        consistency, checked = [], 0
        for _ in range(max(1, proofs // 10)):
            old, new = sorted(rng.sample(sizes, 2)) if len(sizes) > 1 else (sizes[0], sizes[0])
            began = time.perf_counter()
            proof = service.consistency(old, new)
            consistency.append(time.perf_counter() - began)
            if old != new:
                verify_audit.check_consistency(proof, key)
            checked += 1
        result["consistency"] = _percentiles(consistency) | {"verified": checked}

        naive_times = []
        seq_of = {d: i + 1 for i, d in enumerate(ids)}
        for decision_id in rng.sample(ids, naive):
            began = time.perf_counter()
            leaves: list[bytes] = []
            while True:
                more = reads.leaf_hashes(engine, len(leaves))
                leaves += more
                if len(more) < reads.READ_LEAVES:
                    break
            Tree(leaves).inclusion_proof(seq_of[decision_id] - 1, records)
            naive_times.append(time.perf_counter() - began)
        result["naive_rebuild_per_proof"] = _percentiles(naive_times) | {"proofs": naive}
    result["meets_target"] = result["inclusion"]["p99_ms"] <= TARGET_P99_MS
    naive_p50 = result["naive_rebuild_per_proof"]["p50_ms"]
    result["speedup_vs_naive_p50"] = round(naive_p50 / result["inclusion"]["p50_ms"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL") or "sqlite")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--naive", type=int, default=3, help="Proofs made the naive way.")
    args = parser.parse_args()
    url = args.database_url
    backend = "sqlite" if url.startswith("sqlite") else make_url(url).get_backend_name()
    with tempfile.TemporaryDirectory() as scratch:
        measured = run(url, args.records, args.proofs, args.naive, Path(scratch))
    emit(
        {
            "benchmark": "audit_proofs",
            "backend": backend,
            "records": args.records,
            "target_p99_ms": TARGET_P99_MS,
            **measured,
        }
    )


if __name__ == "__main__":
    main()
