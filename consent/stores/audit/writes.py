"""The chain written in a transaction through SQLAlchemy: the chain's lock, the head, the
customers' keys and pseudonyms, and the rows of a group. Every writer of the chain takes the
lock (``lock_chain``); unique seq and prev_hash stay as the last defence against a fork by a
writer that does not.

On PostgreSQL the group commit writes through a function kept in the database instead
(``append_function.py``); these statements are its fallback where the function cannot be made,
and the path of every writer on SQLite and of the callers' own transactions (an erasure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from consent.rules.chain import (
    GENESIS,
    OPERATION_REF,
    Appended,
    new_key,
    pseudonym,
    record_hashes,
    timestamp,
)
from consent.rules.record import OperationRecord
from consent.stores.audit.pending import MAX_BATCH, PendingRecord
from consent.stores.tables import audit_log, customer_keys

#: How long a writer waits for the chain's lock on PostgreSQL before failing the batch (SQLite
#: waits for its busy timeout, set in consent/stores/store.py).
LOCK_TIMEOUT_SECONDS = 10.0
#: First key of the PostgreSQL advisory lock; the second is the audit table's oid, so each
#: schema's chain has its own lock.
LOCK_NAMESPACE = 0x4E42_4155  # "NBAU"

_PG_LOCK = (
    "SELECT set_config('lock_timeout', %s, true), "
    f"pg_advisory_xact_lock({LOCK_NAMESPACE}, "
    f"CAST(CAST(CAST('{audit_log.name}' AS regclass) AS oid) AS integer))"
)
_PG_KEYS = f"SELECT customer_id, key FROM {customer_keys.name} WHERE customer_id = ANY(%s)"
_PG_INSERT = (
    f"INSERT INTO {audit_log.name} "
    "(seq, decision_id, recorded_at, customer_ref, prev_hash, record_hash, body, leaf_hash) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
_HEAD = f"SELECT seq, record_hash FROM {audit_log.name} ORDER BY seq DESC LIMIT 1"
_PG_HEAD_AND_KEYS = (
    "SELECT 'head', CAST(seq AS text), record_hash, NULL::bytea "
    f"FROM ({_HEAD}) AS head UNION ALL "
    f"SELECT 'key', customer_id, NULL, key FROM {customer_keys.name} "
    "WHERE customer_id = ANY(%s)"
)
#: The erase function of ``append_only.sql``.
ERASE_KEY = "nextbest_erase_customer_key"
_ROW = (
    "seq",
    "decision_id",
    "recorded_at",
    "customer_ref",
    "prev_hash",
    "record_hash",
    "body",
    "leaf_hash",
)


def lock_timeout(seconds: float) -> str:
    """A lock timeout as PostgreSQL's ``lock_timeout`` setting takes it."""
    return f"{max(1, round(seconds * 1000))}ms"


def lock_chain(connection: Connection, timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Serialise with every other writer of the chain until this transaction ends.

    On PostgreSQL an advisory lock. On SQLite the first write of the transaction takes the
    database's single write lock, which writers of the chain take up front (BEGIN IMMEDIATE).
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_LOCK, (lock_timeout(timeout_seconds),))


def erase_customer_key(connection: Connection, customer_id: str) -> bool:
    """Delete the customer's pseudonymisation key in the caller's transaction, so the erasure
    commits or rolls back with the caller's other deletions. Whether there was a key.

    On PostgreSQL through the erase function where it is installed (``append_only.sql``): the
    application's role may call it but may not delete keys itself.

    The chain's lock orders the erasure against appends: a record committed after it is written
    under a new key, never under the erased one resurrected.
    """
    lock_chain(connection)
    if connection.dialect.name == "postgresql" and _erase_function(connection):
        erased = connection.exec_driver_sql(f"SELECT {ERASE_KEY}(%s)", (customer_id,)).scalar()
        return bool(erased)
    deleted = connection.execute(
        delete(customer_keys).where(customer_keys.c.customer_id == customer_id)
    )
    return bool(deleted.rowcount)


def _erase_function(connection: Connection) -> bool:
    found = connection.exec_driver_sql("SELECT to_regproc(%s) IS NOT NULL", (ERASE_KEY,))
    return bool(found.scalar())


def append_operation_in(
    connection: Connection,
    record: OperationRecord,
    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
) -> Appended:
    """Append an operation's record (``OperationRecord``: no customer) in the caller's
    transaction, so it commits or rolls back with the caller's other writes (an erasure is
    logged exactly when it happened). Its ``operation_id`` takes the decision id's place in the
    chain, and ``OPERATION_REF`` the pseudonym's, so a customer's export never finds it. Takes
    the chain's lock, as every writer does."""
    lock_chain(connection, lock_timeout_seconds)
    seq, prev, _ = _head_and_keys(connection, [])
    body = record.model_dump_json()
    now = datetime.now(UTC)
    seq += 1
    at = timestamp(now)
    digest, leaf = record_hashes(prev, seq, record.operation_id, at, OPERATION_REF, body)
    row = (seq, record.operation_id, now, OPERATION_REF, prev, digest, body, leaf)
    connection.execute(insert(audit_log), [dict(zip(_ROW, row, strict=True))])
    return Appended(seq, prev, digest, record.operation_id, OPERATION_REF, now)


def write_group(
    connection: Connection,
    requests: Sequence[PendingRecord],
    *,
    serialise: bool,
    lock_timeout_seconds: float,
) -> list[Appended]:
    """Write ``requests`` after the head in one transaction and commit it: under the chain's
    lock if ``serialise`` (an unserialised writer is the benchmark's baseline, which relies on
    the unique columns alone)."""
    if serialise:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        lock_chain(connection, lock_timeout_seconds)
    # Keys are read under the lock: an erasure is either wholly before this group
    # (which then makes a new key) or after it (and deletes the key used here).
    customers = sorted({r.customer_id for r in requests})
    seq, prev, keys = _head_and_keys(connection, customers)
    refs = _pseudonyms(connection, customers, keys)
    rows, outcomes = _chained(requests, seq, prev, refs)
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_INSERT, rows)
    else:
        connection.execute(insert(audit_log), [dict(zip(_ROW, r, strict=True)) for r in rows])
    connection.commit()
    return outcomes


def insert_if_absent(
    connection: Connection, table: Table, rows: list[dict[str, Any]], *returning: Any
) -> list[Any]:
    """Insert the rows that are not there yet (by primary key); those inserted, if
    ``returning`` names columns to return. Racing writers never fail on each other."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql_insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite_insert(table).on_conflict_do_nothing()
    else:
        raise NotImplementedError(f"the audit log does not support {dialect}")
    if not returning:
        connection.execute(statement, rows)
        return []
    return list(connection.execute(statement.returning(*returning), rows))


def read_keys(connection: Connection, customer_ids: Sequence[str]) -> dict[str, bytes]:
    """The keys the customers have (none for a customer erased or never logged)."""
    found: dict[str, bytes] = {}
    for start in range(0, len(customer_ids), MAX_BATCH):
        chunk = list(customer_ids[start : start + MAX_BATCH])
        if connection.dialect.name == "postgresql":
            rows: Iterable[Any] = connection.exec_driver_sql(_PG_KEYS, (chunk,))
        else:
            rows = connection.execute(
                select(customer_keys.c.customer_id, customer_keys.c.key).where(
                    customer_keys.c.customer_id.in_(chunk)
                )
            )
        found.update((row.customer_id, bytes(row.key)) for row in rows)
    return found


def _head_and_keys(
    connection: Connection, customer_ids: Sequence[str]
) -> tuple[int, str, dict[str, bytes]]:
    """The head of the chain (seq, record hash) and the keys the customers have. Both are read
    after the chain's lock is taken, in one statement on PostgreSQL (a statement costs more
    CPU here than hashing a record)."""
    if connection.dialect.name == "postgresql" and len(customer_ids) <= MAX_BATCH:
        seq, head_hash, keys = 0, GENESIS, {}
        for kind, name, record_hash, key in connection.exec_driver_sql(
            _PG_HEAD_AND_KEYS, (list(customer_ids),)
        ):
            if kind == "head":
                seq, head_hash = int(name), record_hash
            else:
                keys[name] = bytes(key)
        return seq, head_hash, keys
    keys = read_keys(connection, customer_ids)
    head = connection.exec_driver_sql(_HEAD).first()
    return (head.seq, head.record_hash, keys) if head else (0, GENESIS, keys)


def _pseudonyms(
    connection: Connection, customer_ids: Iterable[str], known: Mapping[str, bytes]
) -> dict[str, str]:
    """Each customer's pseudonym under their key (``known`` holds keys already read), creating
    missing keys: insert-if-absent then read, so writers racing on a new customer (in any
    process) all end with the same key."""
    ids = sorted(set(customer_ids))
    keys = dict(known)
    missing = [i for i in ids if i not in keys]
    if missing:
        now = datetime.now(UTC)
        rows = [{"customer_id": i, "key": new_key(), "created_at": now} for i in missing]
        columns = (customer_keys.c.customer_id, customer_keys.c.key)
        keys.update(
            (row.customer_id, bytes(row.key))
            for row in insert_if_absent(connection, customer_keys, rows, *columns)
        )
        raced = [i for i in missing if i not in keys]
        if raced:  # another writer made these keys first: theirs are the keys
            keys.update(read_keys(connection, raced))
    return {i: pseudonym(keys[i], i) for i in ids}


def _chained(
    requests: Sequence[PendingRecord], seq: int, prev: str, refs: Mapping[str, str]
) -> tuple[list[tuple[Any, ...]], list[Appended]]:
    """The rows to insert after head (``seq``, ``prev``), each linked to the one before, and
    what each caller is told once they are committed."""
    now = datetime.now(UTC)
    at = timestamp(now)
    rows, outcomes = [], []
    for request in requests:
        ref = refs[request.customer_id]
        body = request.body.replace(request.placeholder, ref)
        seq += 1
        record_hash, leaf = record_hashes(prev, seq, request.decision_id, at, ref, body)
        rows.append((seq, request.decision_id, now, ref, prev, record_hash, body, leaf))
        outcomes.append(Appended(seq, prev, record_hash, request.decision_id, ref, now))
        prev = record_hash
    return rows, outcomes
