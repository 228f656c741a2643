"""Reading the audit log's tables: one record, a customer's pseudonym, exports in pages, the walk
that verifies the stored chain, and its checkpoints. The log is never loaded whole."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, select

from consent.rules.chain import (
    GENESIS,
    OPERATION_REF,
    Checkpoint,
    Link,
    Verification,
    pseudonym,
    record_leaf_hash,
    timestamp,
    verify_chain,
)
from consent.rules.signed_heads import Head
from consent.stores.audit.writes import insert_if_absent, read_keys
from consent.stores.tables import audit_checkpoints, audit_log

#: Records read per query when verifying or exporting.
READ_BATCH = 1000
#: Leaf hashes read per query (32 bytes each and a few columns).
READ_LEAVES = 50_000


def get(engine: Engine, decision_id: str) -> dict[str, Any] | None:
    with engine.connect() as connection:
        row = connection.execute(
            select(audit_log).where(audit_log.c.decision_id == decision_id)
        ).first()
    return None if row is None else _entry(row)


def pseudonym_of(engine: Engine, customer_id: str) -> str | None:
    """The customer's current pseudonym; None once erased (or before their first record)."""
    with engine.connect() as connection:
        key = read_keys(connection, [customer_id]).get(customer_id)
    return None if key is None else pseudonym(key, customer_id)


def export(
    engine: Engine,
    customer_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    with_body: bool = True,
    batch: int = READ_BATCH,
) -> Iterator[dict[str, Any]]:
    """The records, in seq order, as JSON-able dicts: all of them, a customer's (under their
    current key: none once erased), and/or those recorded in ``[since, until)``, read ``batch``
    at a time. ``body`` is the record's text as hashed (``record`` parsed): with it,
    ``verify_export`` checks a whole-log export without the database."""
    conditions: list[ColumnElement[bool]] = []
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise ValueError("since and until must carry their time zone")
    if since is not None:
        conditions.append(audit_log.c.recorded_at >= since.astimezone(UTC))
    if until is not None:
        conditions.append(audit_log.c.recorded_at < until.astimezone(UTC))
    if customer_id is not None:
        ref = pseudonym_of(engine, customer_id)
        if ref is None:
            return iter(())
        conditions.append(audit_log.c.customer_ref == ref)
    return (_entry(row, with_body) for row in _rows(engine, conditions, batch))


def verify(
    engine: Engine, checkpoint: Checkpoint | None = None, heads: Sequence[Head] = ()
) -> Verification:
    """Walk the whole chain, checking it against the stored checkpoints, ``checkpoint`` (one
    kept outside the database is what proves the tail was not cut off) and the signed
    ``heads`` published outside."""
    given = [checkpoint] if checkpoint is not None else []
    links = (
        Link(
            row.seq,
            row.decision_id,
            timestamp(row.recorded_at),
            row.customer_ref,
            row.prev_hash,
            row.record_hash,
            row.body,
            None if row.leaf_hash is None else bytes(row.leaf_hash),
        )
        for row in _rows(engine)
    )
    return verify_chain(links, checkpoints(engine) + given, heads)


def operations(engine: Engine, operation: str) -> list[dict[str, Any]]:
    """The bodies of the operation records of kind ``operation``, oldest first."""
    marker = json.dumps({"operation": operation}, separators=(",", ":"))[1:-1]
    with engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.body)
            .where(
                audit_log.c.customer_ref == OPERATION_REF,
                audit_log.c.body.contains(marker, autoescape=True),
            )
            .order_by(audit_log.c.seq)
        ).scalars()
        bodies = [json.loads(body) for body in rows]
    return [b for b in bodies if b.get("operation") == operation]


class MissingRecord(Exception):
    """A record is missing from the log (a gap in its seqs)."""


def leaf_hashes(engine: Engine, after: int, last: int | None = None) -> list[bytes]:
    """The Merkle leaf hashes of records ``after + 1`` to ``last`` (default: up to
    ``READ_LEAVES`` records), in order: stored, or computed from the row where a record was
    written before leaf hashes were kept. Raises ``MissingRecord`` at a gap."""
    last = after + READ_LEAVES if last is None else last
    columns = (
        audit_log.c.seq,
        audit_log.c.leaf_hash,
        audit_log.c.decision_id,
        audit_log.c.recorded_at,
        audit_log.c.customer_ref,
    )
    with engine.connect() as connection:
        rows = connection.execute(
            select(*columns)
            .where(audit_log.c.seq > after, audit_log.c.seq <= last)
            .order_by(audit_log.c.seq)
        ).all()
        leaves = []
        for expected, row in enumerate(rows, start=after + 1):
            if row.seq != expected:
                raise MissingRecord(f"record {expected} is missing from the log")
            if row.leaf_hash is not None:
                leaves.append(bytes(row.leaf_hash))
                continue
            body = connection.execute(
                select(audit_log.c.body).where(audit_log.c.seq == row.seq)
            ).scalar_one()
            at = timestamp(row.recorded_at)
            leaves.append(record_leaf_hash(row.seq, row.decision_id, at, row.customer_ref, body))
    return leaves


def head_seq(engine: Engine) -> int:
    """The last record's seq (the number of records); 0 for an empty log."""
    with engine.connect() as connection:
        head = connection.execute(
            select(audit_log.c.seq).order_by(audit_log.c.seq.desc()).limit(1)
        ).scalar()
    return head or 0


def checkpoint(engine: Engine) -> Checkpoint:
    """Store and return the current head of the chain."""
    with engine.begin() as connection:
        head = connection.execute(
            select(audit_log.c.seq, audit_log.c.record_hash)
            .order_by(audit_log.c.seq.desc())
            .limit(1)
        ).first()
        seq, head_hash = (head.seq, head.record_hash) if head else (0, GENESIS)
        # Seqs run 1..N without gaps, so the head's seq is also the number of records.
        row = {
            "seq": seq,
            "head_hash": head_hash,
            "records": seq,
            "taken_at": datetime.now(UTC),
        }
        insert_if_absent(connection, audit_checkpoints, [row])
        stored = connection.execute(
            select(audit_checkpoints).where(audit_checkpoints.c.seq == seq)
        ).one()
    return _checkpoint(stored)


def checkpoints(engine: Engine) -> list[Checkpoint]:
    with engine.connect() as connection:
        rows = connection.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
        return [_checkpoint(row) for row in rows]


def _rows(
    engine: Engine, conditions: Sequence[ColumnElement[bool]] = (), batch: int = READ_BATCH
) -> Iterator[Any]:
    last = 0
    while True:
        # A connection per page: a slow consumer of an export holds no transaction open.
        with engine.connect() as connection:
            rows = connection.execute(
                select(audit_log)
                .where(audit_log.c.seq > last, *conditions)
                .order_by(audit_log.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(row.seq, row.head_hash, row.records, _aware(row.taken_at))


def _entry(row: Any, with_body: bool = False) -> dict[str, Any]:
    entry = {
        "seq": row.seq,
        "decision_id": row.decision_id,
        "recorded_at": timestamp(row.recorded_at),
        "customer_ref": row.customer_ref,
        "prev_hash": row.prev_hash,
        "record_hash": row.record_hash,
        "record": json.loads(row.body),
    }
    if with_body:
        entry["body"] = row.body
    return entry
