"""The append-only, hash-chained audit log: one record per decision.

``record_hash = SHA-256(prev_hash || "\\n" || canonical JSON of the record)``; the first record's
``prev_hash`` is the genesis value. A record is appended, and its transaction committed, before
the decision it describes is returned or published.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from consent.model import DecisionRecord
from consent.store import audit_log

GENESIS = "sha256:" + "0" * 64
#: Attempts to win the head of the chain against concurrent writers before giving up.
MAX_APPEND_ATTEMPTS = 50


class AuditWriteFailed(RuntimeError):
    code = "audit_unavailable"


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, body_json: str) -> str:
    digest = hashlib.sha256(f"{prev_hash}\n{body_json}".encode()).hexdigest()
    return f"sha256:{digest}"


@dataclass(frozen=True)
class Appended:
    seq: int
    prev_hash: str
    record_hash: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    head_hash: str
    first_bad_seq: int | None = None
    first_bad_decision: str | None = None
    problem: str | None = None


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, record: DecisionRecord) -> Appended:
        body = canonical(record.model_dump(mode="json"))
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                with self.engine.begin() as connection:
                    head = connection.execute(
                        select(audit_log.c.seq, audit_log.c.record_hash)
                        .order_by(audit_log.c.seq.desc())
                        .limit(1)
                    ).first()
                    seq, prev = (head.seq + 1, head.record_hash) if head else (1, GENESIS)
                    record_hash = chain_hash(prev, body)
                    connection.execute(
                        insert(audit_log).values(
                            seq=seq,
                            decision_id=record.decision_id,
                            recorded_at=datetime.now(UTC),
                            customer_ref=record.customer_ref,
                            prev_hash=prev,
                            record_hash=record_hash,
                            body=body,
                        )
                    )
                return Appended(seq, prev, record_hash)
            except IntegrityError as error:
                if "decision_id" in str(error.orig):
                    raise
                continue  # another writer took this head; read the new head and retry
            except OperationalError as error:
                if "locked" in str(error.orig):
                    continue
                raise AuditWriteFailed(str(error.orig)) from error
        raise AuditWriteFailed("could not append to the audit chain under contention")

    def get(self, decision_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(audit_log).where(audit_log.c.decision_id == decision_id)
            ).first()
        if row is None:
            return None
        return {
            "seq": row.seq,
            "prev_hash": row.prev_hash,
            "record_hash": row.record_hash,
            "record": json.loads(row.body),
        }

    def _rows(self, batch: int = 2000) -> Iterator[Any]:
        last = 0
        while True:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    select(audit_log)
                    .where(audit_log.c.seq > last)
                    .order_by(audit_log.c.seq)
                    .limit(batch)
                ).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    def verify(self) -> Verification:
        """Walk the whole chain; name the first record whose link or hash does not hold."""
        expected_prev, expected_seq, count = GENESIS, 1, 0
        for row in self._rows():
            problem = None
            if row.seq != expected_seq:
                problem = f"gap: expected seq {expected_seq}, found {row.seq}"
            elif row.prev_hash != expected_prev:
                problem = "prev_hash does not match the previous record's hash"
            elif chain_hash(row.prev_hash, row.body) != row.record_hash:
                problem = "record_hash does not match the record's content"
            if problem:
                return Verification(False, count, expected_prev, row.seq, row.decision_id, problem)
            expected_prev, expected_seq, count = row.record_hash, row.seq + 1, count + 1
        return Verification(True, count, expected_prev)

    def export(self, customer_ref: str | None = None) -> Iterator[dict[str, Any]]:
        for row in self._rows():
            if customer_ref is None or row.customer_ref == customer_ref:
                yield {
                    "seq": row.seq,
                    "prev_hash": row.prev_hash,
                    "record_hash": row.record_hash,
                    "record": json.loads(row.body),
                }
