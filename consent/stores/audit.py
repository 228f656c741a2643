"""The append-only, hash-chained audit log: one record per decision, kept like a payments ledger,
and one per operation on many customers at once (``append_operation``: a batch scoring run, an
erasure), which names no customer.

**Hashing.** A record's hash covers its place in the chain and every column stored with it::

    header      = canonical({"seq", "decision_id", "recorded_at", "customer_ref"})
    record_hash = "sha256:" + SHA-256(prev_hash + "\\n" + header + "\\n" + body)

``header`` is canonical JSON (sorted keys, no spaces, UTF-8); ``recorded_at`` in it is UTC with
microseconds (``2026-11-01T09:00:00.000000Z``); the first record's ``prev_hash`` is ``GENESIS``.
``body`` is the ``DecisionRecord``'s JSON as its model writes it, stored and hashed byte for
byte: verification hashes the stored text and never serialises again, so it does not depend on
how any JSON library orders keys or writes floats (exports carry the text for that reason).
Sorted-key JSON from the standard library would cost 3.5 times as much for every record.
Neither a hash nor the header holds a raw newline, so the parts cannot be shifted into one
another.

**Writing.** ``append`` returns only once the record's transaction has committed. Concurrent
appends in a process are gathered by group commit: one caller at a time leads, writing every
waiting record in one transaction that takes the chain's lock (``pg_advisory_xact_lock`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), reads the head once and inserts the batch with
consecutive seqs; then it releases each waiting caller with its ``Appended`` or, if the
transaction failed, an ``AuditWriteFailed``, and hands the lead to the next waiting caller.
On PostgreSQL that transaction is one call of a function kept in the database (see
``_PG_APPEND_FUNCTION``). Callers serialise their records themselves, outside the lock. Unique
seq and prev_hash stay as the last defence against a fork by a writer that does not take the
lock. ``append_many`` writes a producer's batch in one transaction, all or nothing.

**Pseudonyms.** The log names a customer only as ``cref:`` + HMAC-SHA256(key, customer id) under
a random per-customer key (``customer_keys``), created on the customer's first record. Deleting
the key (``forget``, the right to erasure) leaves every record and the chain intact, but nothing
ties those records to the customer any more; a customer who comes back gets a new key.

**Checkpoints.** Deleting the newest records leaves a valid chain; only a head kept from before
shows it. ``checkpoint()`` stores the head (and can be handed to an outside party as JSON);
``verify`` checks the stored checkpoints and any given one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import asyncpg
from psycopg import Error as _PsycopgError
from psycopg import IntegrityError as _PsycopgIntegrity
from psycopg import OperationalError as _PsycopgOperational
from psycopg.errors import LockNotAvailable as _PsycopgLockNotAvailable
from psycopg.errors import UndefinedFunction as _PsycopgUndefinedFunction
from sqlalchemy import ColumnElement, Connection, Engine, Table, delete, event, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from consent.rules.model import DecisionRecord, OperationRecord
from consent.stores.bounds import (
    DECISION_PSYCOPG_CONNECT_TIMEOUT_S,
    DECISION_SERVER_BOUNDS,
    asyncpg_connect_args,
    bounded_engine,
)
from consent.stores.breaker import Breaker, StoreNotAnswering, close_or_drop
from consent.stores.tables import audit_checkpoints, audit_log, customer_keys

log = logging.getLogger(__name__)

GENESIS = "sha256:" + "0" * 64
PSEUDONYM_PREFIX = "cref:"
#: The ``customer_ref`` of an operation's record (``append_operation``): it concerns no one
#: customer, and no pseudonym (``cref:...``) can equal it.
OPERATION_REF = "operation"
#: Hex digits of the HMAC kept in a pseudonym: 128 bits, far beyond any bank's customer count.
PSEUDONYM_HEX_DIGITS = 32
KEY_BYTES = 32
MAX_CUSTOMER_ID = 64  # customer_keys.customer_id
#: Records one group-commit transaction takes at most (also bounds SQL parameter lists).
MAX_BATCH = 500
#: How long a new leader yields to callers about to join its group (see AuditLog._gather).
GATHER_SECONDS = 0.001
#: Attempts to win the head of the chain against a writer that does not take the lock.
MAX_APPEND_ATTEMPTS = 50
#: How long a writer waits for the chain's lock on PostgreSQL before failing the batch (SQLite
#: waits for its busy timeout, set in consent/stores/store.py).
LOCK_TIMEOUT_SECONDS = 10.0
#: Records that may wait for the event loop's writer at once; beyond, an append fails at
#: once (the API bounds its decisions in flight well below this: it is the last line).
MAX_WAITING = 4 * MAX_BATCH
#: Records read per query when verifying or exporting: the log is never loaded whole.
READ_BATCH = 1000
#: First key of the PostgreSQL advisory lock; the second is the audit table's oid, so each
#: schema's chain has its own lock.
_LOCK_NAMESPACE = 0x4E42_4155  # "NBAU"

# On PostgreSQL a group is written by one call of a function in the database
# (``_PG_APPEND_FUNCTION``): one round trip and one statement, its own transaction. It takes
# the chain's lock, reads the head, finds or makes each customer's key, and computes the
# pseudonyms and the hashes with the same definitions as ``pseudonym`` and ``hash_record``
# (HMAC-SHA256 built from the server's own ``sha256``, so no extension is needed); the caller
# sends what it knows already (the bodies, escaped decision ids, the time) and gets back each
# record's place in the chain. Measured on the benchmark's records: 0.11 ms of the writer's
# CPU and 0.21 ms of the server's per record in groups of one, against 0.59 and 0.44 ms for
# the same transaction in two round trips with the chain worked out in Python. ``verify``
# recomputes every hash in Python from the stored text, so the two definitions are checked
# against each other on every verification. Where the function cannot be made (a role without
# CREATE on the schema), the writer uses the statements below, in one transaction.
_PG_LOCK = (
    "SELECT set_config('lock_timeout', %s, true), "
    f"pg_advisory_xact_lock({_LOCK_NAMESPACE}, "
    f"CAST(CAST(CAST('{audit_log.name}' AS regclass) AS oid) AS integer))"
)
_PG_KEYS = f"SELECT customer_id, key FROM {customer_keys.name} WHERE customer_id = ANY(%s)"
_PG_INSERT = (
    f"INSERT INTO {audit_log.name} "
    "(seq, decision_id, recorded_at, customer_ref, prev_hash, record_hash, body) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
#: Versioned: a changed definition gets a new name, so processes of both versions can run.
_PG_APPEND_NAME = "nextbest_audit_append_v1"


def _pg_hmac_sha256(key: str, message: str) -> str:
    """SQL for HMAC-SHA256 (RFC 2104, 64-byte blocks) of two bytea expressions, from the
    server's own ``sha256``: the key, zero-padded, XORed with each pad as one 512-bit string
    (``varbit_send`` gives its bytes after a 4-byte length). Written into the append function
    as an expression: as a SQL function of its own it cost 0.1 ms a call, and a version that
    aggregated 64-bit words 0.25 ms, more than the rest of the append. Keys longer than a block
    are hashed first, as the RFC says (ours are 32 bytes)."""
    padded = (
        f"('x' || rpad(encode(CASE WHEN length({key}) > 64 THEN sha256({key}) ELSE {key} END, "
        "'hex'), 128, '0'))::bit(512)"
    )
    inner = f"sha256(substr(varbit_send({padded} # x'{'36' * 64}'), 5) || {message})"
    return f"sha256(substr(varbit_send({padded} # x'{'5c' * 64}'), 5) || {inner})"


_PG_APPEND_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {_PG_APPEND_NAME}(
  p_lock_timeout text, p_recorded_at timestamptz, p_recorded_at_text text,
  p_decision_ids text[], p_decision_ids_json text[], p_customers text[], p_new_keys bytea[],
  p_placeholders text[], p_bodies text[]
) RETURNS TABLE (seq bigint, prev_hash text, record_hash text, customer_ref text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_seq bigint;
  v_prev text;
  v_key bytea;
  v_ref text;
  v_body text;
  v_header text;
BEGIN
  PERFORM set_config('lock_timeout', p_lock_timeout, true);
  PERFORM pg_advisory_xact_lock({_LOCK_NAMESPACE},
    CAST(CAST(CAST('{audit_log.name}' AS regclass) AS oid) AS integer));
  SELECT a.seq, a.record_hash INTO v_seq, v_prev
    FROM {audit_log.name} AS a ORDER BY a.seq DESC LIMIT 1;
  IF NOT FOUND THEN
    v_seq := 0;
    v_prev := '{GENESIS}';
  END IF;
  FOR i IN 1 .. coalesce(array_length(p_decision_ids, 1), 0) LOOP
    -- Under the lock, like an erasure: a key erased before this point is never used again.
    SELECT k.key INTO v_key FROM {customer_keys.name} AS k WHERE k.customer_id = p_customers[i];
    IF NOT FOUND THEN
      INSERT INTO {customer_keys.name} (customer_id, key, created_at)
        VALUES (p_customers[i], p_new_keys[i], p_recorded_at)
        ON CONFLICT DO NOTHING;
      SELECT k.key INTO STRICT v_key
        FROM {customer_keys.name} AS k WHERE k.customer_id = p_customers[i];
    END IF;
    v_ref := '{PSEUDONYM_PREFIX}' || left(encode(
      {_pg_hmac_sha256("v_key", "convert_to(p_customers[i], 'UTF8')")}, 'hex'),
      {PSEUDONYM_HEX_DIGITS});
    v_body := replace(p_bodies[i], p_placeholders[i], v_ref);
    v_seq := v_seq + 1;
    -- canonical(): sorted keys, no spaces; the decision id comes escaped by the caller.
    v_header := '{{"customer_ref":"' || v_ref || '","decision_id":' || p_decision_ids_json[i]
      || ',"recorded_at":"' || p_recorded_at_text || '","seq":' || v_seq || '}}';
    seq := v_seq;
    prev_hash := v_prev;
    record_hash := 'sha256:' || encode(sha256(convert_to(
      v_prev || E'\\n' || v_header || E'\\n' || v_body, 'UTF8')), 'hex');
    customer_ref := v_ref;
    INSERT INTO {audit_log.name}
      (seq, decision_id, recorded_at, customer_ref, prev_hash, record_hash, body)
      VALUES (v_seq, p_decision_ids[i], p_recorded_at, v_ref, v_prev, record_hash, v_body);
    RETURN NEXT;
    v_prev := record_hash;
  END LOOP;
END
$$
"""
_PG_APPEND = (
    f"SELECT seq, prev_hash, record_hash, customer_ref FROM {_PG_APPEND_NAME}"
    "(%s, %s, %s, %b, %b, %b, %b, %b, %b)"
)
#: ``_PG_APPEND`` in asyncpg's placeholders (the event loop's writer; asyncpg prepares it once
#: per connection and keeps it in the connection's statement cache).
_PG_APPEND_ASYNC = (
    f"SELECT seq, prev_hash, record_hash, customer_ref FROM {_PG_APPEND_NAME}"
    "($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
# The placeholder stands in for the pseudonym in a body until the writer knows it: random per
# process (no record can hold one by chance) and counted, not drawn per record (os.urandom
# costs more than a hash here).
_PLACEHOLDER_BASE = secrets.token_hex(PSEUDONYM_HEX_DIGITS // 4)
_placeholders = itertools.count()

_HEAD = f"SELECT seq, record_hash FROM {audit_log.name} ORDER BY seq DESC LIMIT 1"
_PG_HEAD_AND_KEYS = (
    "SELECT 'head', CAST(seq AS text), record_hash, NULL::bytea "
    f"FROM ({_HEAD}) AS head UNION ALL "
    f"SELECT 'key', customer_id, NULL, key FROM {customer_keys.name} "
    "WHERE customer_id = ANY(%s)"
)
_ROW = ("seq", "decision_id", "recorded_at", "customer_ref", "prev_hash", "record_hash", "body")


class AuditWriteFailed(RuntimeError):
    """The record was not committed: the decision must not be returned or published."""

    code = "audit_unavailable"


class DuplicateDecision(AuditWriteFailed):
    """The log already holds a record with this decision id; nothing was written."""

    code = "duplicate_decision"


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def timestamp(at: datetime) -> str:
    """A time as hashed and exported. SQLite hands back naive datetimes; they are UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hash_record(
    prev_hash: str, seq: int, decision_id: str, recorded_at: str, customer_ref: str, body: str
) -> str:
    header = canonical(
        {
            "seq": seq,
            "decision_id": decision_id,
            "recorded_at": recorded_at,
            "customer_ref": customer_ref,
        }
    )
    digest = hashlib.sha256(f"{prev_hash}\n{header}\n{body}".encode()).hexdigest()
    return f"sha256:{digest}"


def pseudonym(key: bytes, customer_id: str) -> str:
    mac = hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + mac[:PSEUDONYM_HEX_DIGITS]


def mentions(text: str, customer_id: str) -> bool:
    """Whether ``text`` (JSON) names the customer: their id in any case, but not as part of a
    longer word or number (so "C1" is not found in "C12", nor in a hash)."""
    needle = json.dumps(customer_id, ensure_ascii=False)[1:-1].lower()
    haystack = text.lower()
    # str.find, not a regex: a pattern that opens with a look-behind is tried at every offset,
    # twenty times slower on a 40 kB record.
    at = haystack.find(needle)
    while at >= 0:
        end = at + len(needle)
        before = haystack[at - 1] if at else ""
        after = haystack[end] if end < len(haystack) else ""
        if not (before.isascii() and before.isalnum()) and not (
            after.isascii() and after.isalnum()
        ):
            return True
        at = haystack.find(needle, at + 1)
    return False


@dataclass(frozen=True)
class Appended:
    seq: int
    prev_hash: str
    record_hash: str
    decision_id: str
    customer_ref: str  # the pseudonym the record was written under
    recorded_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain at a moment: record ``seq`` had hash ``head_hash``."""

    seq: int
    head_hash: str
    records: int
    taken_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "records": self.records,
            "taken_at": timestamp(self.taken_at),
        }

    def to_json(self) -> str:
        return canonical(self.as_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        taken_at = datetime.fromisoformat(str(data["taken_at"]))
        if taken_at.tzinfo is None:
            raise ValueError("a checkpoint's taken_at must carry its time zone")
        return cls(int(data["seq"]), str(data["head_hash"]), int(data["records"]), taken_at)

    @classmethod
    def from_json(cls, document: str) -> Checkpoint:
        return cls.from_dict(json.loads(document))


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int  # records found good, in order from the first
    head_hash: str  # hash of the last good record
    first_bad_seq: int | None = None
    first_bad_decision: str | None = None
    problem: str | None = None
    checkpoints: int = 0  # checkpoints checked


@dataclass(frozen=True)
class WriterStats:
    appends: int = 0
    transactions: int = 0  # committed; appends / transactions is the mean group size
    largest_group: int = 0


class _Link(NamedTuple):
    """One record as the chain sees it, from the database or from an export."""

    seq: int
    decision_id: str
    recorded_at: str
    customer_ref: str
    prev_hash: str
    record_hash: str
    body: str


def _verify_chain(links: Iterable[_Link], checkpoints: Sequence[Checkpoint] = ()) -> Verification:
    """Walk ``links`` in seq order from the first; name the first record that does not hold."""
    pinned: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        pinned.setdefault(checkpoint.seq, []).append(checkpoint)
    seq, prev, count = 1, GENESIS, 0

    def failed(at: int, decision: str | None, problem: str) -> Verification:
        return Verification(False, count, prev, at, decision, problem, len(checkpoints))

    for checkpoint in pinned.get(0, ()):
        if checkpoint.head_hash != GENESIS:
            return failed(0, None, "a checkpoint at seq 0 does not hold the genesis hash")
    for link in links:
        if link.seq != seq:
            if link.seq > seq:
                problem = f"gap: record {seq} is missing (the next record is {link.seq})"
            else:
                problem = f"out of order: record {link.seq} comes after record {seq - 1}"
            return failed(link.seq, link.decision_id, problem)
        if link.prev_hash != prev:
            before = f"record {seq - 1}" if seq > 1 else "the genesis value"
            return failed(seq, link.decision_id, f"prev_hash does not link to {before}")
        recomputed = hash_record(
            link.prev_hash,
            link.seq,
            link.decision_id,
            link.recorded_at,
            link.customer_ref,
            link.body,
        )
        if recomputed != link.record_hash:
            problem = "record_hash does not match the record (its body or a column was changed)"
            return failed(seq, link.decision_id, problem)
        for checkpoint in pinned.get(seq, ()):
            if checkpoint.head_hash != link.record_hash:
                problem = (
                    f"record {seq} differs from the checkpoint taken at "
                    f"{timestamp(checkpoint.taken_at)}: the log was rewritten at or before it"
                )
                return failed(seq, link.decision_id, problem)
        seq, prev, count = seq + 1, link.record_hash, count + 1
    beyond = [c for c in checkpoints if c.seq >= seq]
    if beyond:
        latest = max(beyond, key=lambda c: c.seq)
        problem = (
            f"truncated: the log ends at record {seq - 1}, but the checkpoint taken at "
            f"{timestamp(latest.taken_at)} holds record {latest.seq}"
        )
        return failed(seq, None, problem)
    return Verification(True, count, prev, checkpoints=len(checkpoints))


def verify_export(
    entries: Iterable[Mapping[str, Any]], checkpoints: Sequence[Checkpoint] = ()
) -> Verification:
    """Verify a whole-log ``export()`` without the database (what an outside auditor runs)."""
    return _verify_chain(
        (
            _Link(
                e["seq"],
                e["decision_id"],
                e["recorded_at"],
                e["customer_ref"],
                e["prev_hash"],
                e["record_hash"],
                e["body"],
            )
            for e in entries
        ),
        checkpoints,
    )


def lock_chain(connection: Connection, timeout_seconds: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Serialise with every other writer of the chain until this transaction ends.

    On PostgreSQL an advisory lock. On SQLite the first write of the transaction takes the
    database's single write lock, which writers of the chain take up front (BEGIN IMMEDIATE).
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_PG_LOCK, (f"{max(1, round(timeout_seconds * 1000))}ms",))


def erase_customer_key(connection: Connection, customer_id: str) -> bool:
    """Delete the customer's pseudonymisation key in the caller's transaction, so the erasure
    commits or rolls back with the caller's other deletions. Whether there was a key.

    The chain's lock orders the erasure against appends: a record committed after it is written
    under a new key, never under the erased one resurrected.
    """
    lock_chain(connection)
    deleted = connection.execute(
        delete(customer_keys).where(customer_keys.c.customer_id == customer_id)
    )
    return bool(deleted.rowcount)


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
    digest = hash_record(prev, seq, record.operation_id, timestamp(now), OPERATION_REF, body)
    row = (seq, record.operation_id, now, OPERATION_REF, prev, digest, body)
    connection.execute(insert(audit_log), [dict(zip(_ROW, row, strict=True))])
    return Appended(seq, prev, digest, record.operation_id, OPERATION_REF, now)


def _insert_if_absent(
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


def _keys(connection: Connection, customer_ids: Sequence[str]) -> dict[str, bytes]:
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
    keys = _keys(connection, customer_ids)
    head = connection.exec_driver_sql(_HEAD).first()
    return (head.seq, head.record_hash, keys) if head else (0, GENESIS, keys)


def _pseudonyms(
    connection: Connection, customer_ids: Iterable[str], known: Mapping[str, bytes] | None = None
) -> dict[str, str]:
    """Each customer's pseudonym under their key (``known`` holds keys already read), creating
    missing keys: insert-if-absent then read, so writers racing on a new customer (in any
    process) all end with the same key."""
    ids = sorted(set(customer_ids))
    keys = dict(known) if known is not None else _keys(connection, ids)
    missing = [i for i in ids if i not in keys]
    if missing:
        now = datetime.now(UTC)
        rows = [
            {"customer_id": i, "key": secrets.token_bytes(KEY_BYTES), "created_at": now}
            for i in missing
        ]
        columns = (customer_keys.c.customer_id, customer_keys.c.key)
        keys.update(
            (row.customer_id, bytes(row.key))
            for row in _insert_if_absent(connection, customer_keys, rows, *columns)
        )
        raced = [i for i in missing if i not in keys]
        if raced:  # another writer made these keys first: theirs are the keys
            keys.update(_keys(connection, raced))
    return {i: pseudonym(keys[i], i) for i in ids}


def _chained(
    requests: Sequence[_Request], seq: int, prev: str, refs: Mapping[str, str]
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
        record_hash = hash_record(prev, seq, request.decision_id, at, ref, body)
        rows.append((seq, request.decision_id, now, ref, prev, record_hash, body))
        outcomes.append(Appended(seq, prev, record_hash, request.decision_id, ref, now))
        prev = record_hash
    return rows, outcomes


@dataclass(eq=False)
class _Request:
    """One record waiting to be written, and how its writing ended."""

    customer_id: str
    decision_id: str
    body: str  # the record's JSON, naming the customer by ``placeholder`` until the key is known
    placeholder: str
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead the next group rather than with an outcome
    trips: int = 0  # the audit log's trips when it was admitted (``AuditLog._trips``)
    result: Appended | None = None
    error: BaseException | None = None

    @classmethod
    def of(cls, record: DecisionRecord, customer_id: str | None) -> _Request:
        """Serialised by the caller, so the writer holding the chain's lock only substitutes
        the pseudonym: a random token of the pseudonym's length and alphabet stands in for it,
        which cannot occur in the record by chance."""
        raw = record.customer_ref if customer_id is None else customer_id
        if not 1 <= len(raw) <= MAX_CUSTOMER_ID:
            raise ValueError(f"a customer id must have 1 to {MAX_CUSTOMER_ID} characters")
        if raw.startswith(PSEUDONYM_PREFIX):
            raise ValueError("pass the customer's id, not a pseudonym: the log makes its own")
        placeholder = PSEUDONYM_PREFIX + f"{_PLACEHOLDER_BASE}{next(_placeholders):016x}"
        consents = []
        for consent in record.consents_relied_on:
            if consent.customer_id != raw:
                raise ValueError(f"decision {record.decision_id} relies on another's consent")
            consents.append(consent.model_copy(update={"customer_id": placeholder}))
        document = record.model_copy(
            update={"customer_ref": placeholder, "consents_relied_on": tuple(consents)}
        ).model_dump_json()
        # Only the trigger comes from outside (a request's context, an event's coordinates):
        # the rest is made by our code from the catalog, the policy, features and facts, none of
        # which carries an id, and searching it refused customers whose id is also a word there
        # ("protection", "rm", "0").
        if mentions(json.dumps(record.trigger), raw):
            # Somewhere the log does not pseudonymise (a trigger, a detail) carries the id.
            raise ValueError(
                f"decision {record.decision_id}: the record carries the customer's id outside "
                "customer_ref and the consents; it would survive erasure, so it is not written"
            )
        return cls(raw, record.decision_id, document, placeholder)

    def settle(self, outcome: Appended | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.result = outcome
        self.wake.set()

    def outcome(self) -> Appended:
        if self.error is not None:
            raise self.error
        assert self.result is not None, "a request is settled before its caller returns"
        return self.result


def _install_functions(engine: Engine, lock_timeout_seconds: float) -> bool:
    """Make the append function unless it is there already; whether it can be used (not if the
    role may not create it; any other failure, such as the server being down, is raised and
    the question asked again next time). Made under the chain's lock, so processes starting
    together do not race to make it."""
    try:
        with engine.begin() as connection:
            lock_chain(connection, lock_timeout_seconds)
            found = connection.exec_driver_sql(
                "SELECT to_regproc(%s) IS NOT NULL", (_PG_APPEND_NAME,)
            ).scalar()
            if not found:
                connection.exec_driver_sql(_PG_APPEND_FUNCTION)
        return True
    except ProgrammingError as error:  # e.g. permission denied for schema
        log.warning("audit log: appending without the database function: %s", error.orig)
        return False


def _failures(
    requests: Sequence[_Request], message: str, cause: BaseException | None = None
) -> list[Appended | BaseException]:
    failures: list[Appended | BaseException] = []
    for _ in requests:  # one exception per caller: each is raised in its own thread
        failure = AuditWriteFailed(message)
        failure.__cause__ = cause
        failures.append(failure)
    return failures


def _after_failure(
    error: SQLAlchemyError, requests: Sequence[_Request], *, atomic: bool, serialise: bool
) -> Literal["retry", "alone"] | list[Appended | BaseException]:
    """What a writer does after its group's transaction failed: try again ("retry": a writer
    without the lock took the head), write each record alone ("alone": one repeats a logged
    decision, so only it fails), or report these outcomes."""
    if isinstance(error, IntegrityError):
        if "decision_id" not in str(error.orig):
            return "retry"
        if atomic or len(requests) == 1:
            return [DuplicateDecision(str(error.orig)) for _ in requests]
        return "alone"
    if isinstance(error, OperationalError) and not serialise and "locked" in str(error.orig):
        return "retry"  # the unserialised (naive) writer lost the race for SQLite's lock
    cause = getattr(error, "orig", None) or error
    log.error("audit write of %d records failed: %s", len(requests), cause)
    return _failures(requests, f"the audit log could not be written: {cause}", error)


def _append_call(requests: Sequence[_Request], lock_timeout_seconds: float) -> tuple[Any, ...]:
    """The append function's arguments for a group (``_PG_APPEND``), decided now. Each
    customer is offered a new random key, which the function keeps only if they have none."""
    now = datetime.now(UTC)
    customers = [r.customer_id for r in requests]
    offered = {c: secrets.token_bytes(KEY_BYTES) for c in set(customers)}
    return (
        f"{max(1, round(lock_timeout_seconds * 1000))}ms",
        now,
        timestamp(now),
        [r.decision_id for r in requests],
        [json.dumps(r.decision_id, ensure_ascii=False) for r in requests],
        customers,
        [offered[c] for c in customers],
        [r.placeholder for r in requests],
        [r.body for r in requests],
    )


def _appended(
    call: tuple[Any, ...], rows: list[Any], requests: Sequence[_Request]
) -> list[Appended]:
    now = call[1]
    return [
        Appended(seq, prev, record_hash, request.decision_id, ref, now)
        for (seq, prev, record_hash, ref), request in zip(rows, requests, strict=True)
    ]


def _as_sqlalchemy(error: _PsycopgError) -> SQLAlchemyError:
    """A driver error as SQLAlchemy would report it, so the writers' failure paths hold."""
    kind = IntegrityError if isinstance(error, _PsycopgIntegrity) else OperationalError
    return kind(_PG_APPEND, None, error)


def _asyncpg_as_sqlalchemy(error: Exception) -> SQLAlchemyError:
    """``_as_sqlalchemy`` for asyncpg's errors (the event loop's writer)."""
    integrity = isinstance(error, asyncpg.IntegrityConstraintViolationError)
    kind = IntegrityError if integrity else OperationalError
    return kind(_PG_APPEND_ASYNC, None, error)


class AuditLog:
    """The audit log on the operational store (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = MAX_BATCH,
        lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.lock_timeout_seconds = lock_timeout_seconds
        self._mutex = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._leading = False
        self._stats = WriterStats()
        # Successive leaders write on one kept connection: checking one out of the pool costs a
        # ping and a round trip per group, a tenth of a group's time on PostgreSQL.
        self._connection: Connection | None = None
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # On PostgreSQL the leaders' kept connection has the decision path's bounds, as the
        # event loop's writer has: a caller of ``append`` is a decision waiting to be answered.
        self._leader_engine: Engine | None = None
        # A group that found the database not answering trips it: the groups queued behind it,
        # and new callers, fail at once instead of each waiting out the bounds in turn.
        self.breaker = Breaker("the audit log")
        self._trips = 0  # the times it was tripped: a record admitted before a trip is failed
        self._function: bool | None = None  # whether the append function is there; None: unknown
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncWriter] = (
            weakref.WeakKeyDictionary()
        )
        event.listen(engine, "engine_disposed", lambda _: self._dispose())

    # --- writing ---

    def append(self, record: DecisionRecord, customer_id: str | None = None) -> Appended:
        """Write ``record`` for ``customer_id`` (by default the record's ``customer_ref``, taken
        as the customer's id) and commit before returning. The stored record names the customer
        by pseudonym, in ``customer_ref`` and in the consents relied on.

        Raises ``ValueError`` if the record would carry the customer's id anywhere else,
        ``DuplicateDecision`` if its decision is already logged, ``AuditWriteFailed`` if it
        could not be committed.
        """
        request = self._request(record, customer_id)
        self._admit()
        request.trips = self._trips
        with self._mutex:
            if len(self._queue) >= MAX_WAITING:
                raise AuditWriteFailed("too many records are waiting for the audit log")
            self._queue.append(request)
            lead = not self._leading
            self._leading = True
        if not lead:
            request.wake.wait()
            if not request.lead:
                return request.outcome()
        self._lead()
        return request.outcome()

    def append_many(
        self, records: Sequence[DecisionRecord], customer_ids: Sequence[str] | None = None
    ) -> list[Appended]:
        """Write ``records`` in order in one transaction: all are committed, or none (the
        errors are those of ``append``). It holds the chain's lock while it writes, so batch
        producers should pass thousands of records at a time, not millions."""
        if customer_ids is not None and len(customer_ids) != len(records):
            raise ValueError("one customer id per record")
        ids: Sequence[str | None] = (
            customer_ids if customer_ids is not None else [None] * len(records)
        )
        requests = [self._request(r, c) for r, c in zip(records, ids, strict=True)]
        if not requests:
            return []
        outcomes = self._write(requests, serialise=True, atomic=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        with self._mutex:
            self._count(len(outcomes))
        return [o for o in outcomes if isinstance(o, Appended)]

    def append_operation(self, record: OperationRecord) -> Appended:
        """Write an operation's record (``OperationRecord``: no customer) and commit before
        returning. Its ``operation_id`` takes the decision id's place in the chain, and
        ``OPERATION_REF`` the pseudonym's, so a customer's export never finds it. One
        transaction under the chain's lock, like a group of decisions; operations are rare,
        so they do not join the group commit."""
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                with self.engine.connect() as connection:
                    if connection.dialect.name == "sqlite":
                        connection.exec_driver_sql("BEGIN IMMEDIATE")
                    appended = append_operation_in(connection, record, self.lock_timeout_seconds)
                    connection.commit()
            except IntegrityError as error:
                if "decision_id" in str(error.orig):
                    raise DuplicateDecision(str(error.orig)) from error
                continue  # a writer without the lock took the head: try again
            except SQLAlchemyError as error:
                cause = getattr(error, "orig", None) or error
                raise AuditWriteFailed(f"the audit log could not be written: {cause}") from error
            with self._mutex:
                self._count(1)
            return appended
        raise AuditWriteFailed("could not take the head of the audit chain under contention")

    def _count(self, written: int) -> None:
        if written:
            self._stats = WriterStats(
                self._stats.appends + written,
                self._stats.transactions + 1,
                max(self._stats.largest_group, written),
            )

    @property
    def stats(self) -> WriterStats:
        with self._mutex:
            return self._stats

    def forget(self, customer_id: str) -> bool:
        """Erase the customer from the log (their key); whether they had one. To erase them
        together with other data, call ``erase_customer_key`` in that transaction."""
        with self.engine.begin() as connection:
            return erase_customer_key(connection, customer_id)

    @staticmethod
    def _request(record: DecisionRecord, customer_id: str | None) -> _Request:
        return _Request.of(record, customer_id)

    def _lead(self) -> None:
        """Write the oldest waiting records as one group, release their callers, and hand the
        lead to the next waiting caller (if any), so no thread has to stay behind as writer."""
        self._gather()
        with self._mutex:
            group = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        outcomes = _failures(group, "the audit writer stopped before committing")
        try:
            # Those admitted before the last trip waited behind a group that found the database
            # not answering: they fail at once rather than wait out the bounds in their turn.
            trips = self._trips
            fresh = [r for r in group if r.trips == trips]
            written = iter(self._write(fresh, serialise=True, atomic=False, reuse=True))
            refused = _failures(group, "the audit log did not answer; not trying again yet")
            outcomes = [
                next(written) if r.trips == trips else failed
                for r, failed in zip(group, refused, strict=True)
            ]
        finally:
            for request, outcome in zip(group, outcomes, strict=True):
                request.settle(outcome)
            with self._mutex:
                self._count(sum(isinstance(o, Appended) for o in outcomes))
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.set()
                else:
                    self._leading = False

    def _gather(self) -> None:
        """Let callers join the group before it is taken. Those the last group released are
        serialising their next records, and under the GIL they cannot get to the queue while
        this thread runs: yield to them until the queue stops growing (or GATHER_SECONDS).
        A group of eight costs half the CPU per record of a group of four; a lone caller
        loses a few microseconds."""
        deadline = time.perf_counter() + GATHER_SECONDS
        waiting = len(self._queue)
        while waiting < self.max_batch and time.perf_counter() < deadline:
            time.sleep(0)  # releases the GIL to any thread ready to run
            if len(self._queue) == waiting:
                return
            waiting = len(self._queue)

    def _write(
        self, requests: Sequence[_Request], *, serialise: bool, atomic: bool, reuse: bool = False
    ) -> list[Appended | BaseException]:
        """Commit ``requests`` in one transaction; an outcome per request, never an Appended
        for a record that was not committed. Not ``atomic``, a record that repeats a logged
        decision fails alone and the others are written without it."""
        if not requests:
            return []
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                committed: list[Appended | BaseException] = list(
                    self._commit(requests, serialise=serialise, reuse=reuse)
                )
            except SQLAlchemyError as error:
                if _not_answering(error):
                    self.breaker.failed()
                    self._trips += 1
                then = _after_failure(error, requests, atomic=atomic, serialise=serialise)
            else:
                self.breaker.succeeded()
                return committed
            if then == "retry":
                continue
            if then == "alone":
                return [
                    o
                    for r in requests
                    for o in self._write([r], serialise=serialise, atomic=False, reuse=reuse)
                ]
            return then
        return _failures(requests, "could not take the head of the audit chain under contention")

    def _commit(
        self, requests: Sequence[_Request], *, serialise: bool, reuse: bool = False
    ) -> list[Appended]:
        """One transaction: take the chain's lock, read the head once, insert, commit. With
        ``reuse`` (only the leader, one at a time), on the kept connection; any failure
        discards it, so the next group starts on a fresh one."""
        server_side = serialise and self._server_side()
        engine = self._autocommit if server_side else self.engine
        if not reuse:
            with engine.connect() as connection:
                return self._commit_on(connection, requests, serialise, server_side)
        if self._connection is None:
            self._connection = (self._leader() if server_side else engine).connect()
        try:
            return self._commit_on(self._connection, requests, serialise, server_side)
        except BaseException:
            self.close()
            raise

    def _admit(self) -> None:
        """Raise ``AuditWriteFailed`` at once while the breaker refuses (see ``Breaker``)."""
        try:
            self.breaker.admit()
        except StoreNotAnswering as error:
            raise AuditWriteFailed(str(error)) from error

    def _leader(self) -> Engine:
        """The engine of the leaders' kept connection on PostgreSQL (autocommit: each call of
        the append function is its own transaction), made on first use."""
        if self._leader_engine is None:
            self._leader_engine = bounded_engine(
                self.engine.url.render_as_string(hide_password=False),
                bounds=DECISION_SERVER_BOUNDS,
                connect_timeout=DECISION_PSYCOPG_CONNECT_TIMEOUT_S,
                isolation_level="AUTOCOMMIT",
                pool_size=1,
                max_overflow=0,
                pool_reset_on_return=None,
            )
        return self._leader_engine

    def _dispose(self) -> None:
        self.close()
        engine, self._leader_engine = self._leader_engine, None
        if engine is not None:
            engine.dispose()

    def close(self) -> None:
        """Give back the kept writer connection (it is opened again when needed)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closed outright, not handed back: the pool may already be disposed of.
            connection.invalidate()
            connection.close()

    def _server_side(self) -> bool:
        """Whether groups go through the append function (PostgreSQL; made on first use)."""
        if self._function is None:
            self._function = self.engine.dialect.name == "postgresql" and _install_functions(
                self.engine, self.lock_timeout_seconds
            )
        return self._function

    def _commit_on(
        self,
        connection: Connection,
        requests: Sequence[_Request],
        serialise: bool,
        server_side: bool = False,
    ) -> list[Appended]:
        if server_side:
            return self._commit_server_side(connection, requests)
        if serialise:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            lock_chain(connection, self.lock_timeout_seconds)
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

    def _commit_server_side(
        self, connection: Connection, requests: Sequence[_Request]
    ) -> list[Appended]:
        """PostgreSQL: the group in one call of the append function, on an autocommit
        connection (the call is its own transaction). Each customer is offered a new random key,
        which the function keeps only if the customer has none."""
        raw: Any = connection.connection.driver_connection
        call = _append_call(requests, self.lock_timeout_seconds)
        try:
            rows = raw.execute(_PG_APPEND, call, prepare=True).fetchall()
        except _PsycopgError as error:
            if isinstance(error, _PsycopgUndefinedFunction):
                self._function = None  # dropped since: made again for the next group
            raise _as_sqlalchemy(error) from error
        return _appended(call, rows, requests)

    # --- on an event loop (the API) ---

    async def append_async(
        self, record: DecisionRecord, customer_id: str | None = None
    ) -> Appended:
        """``append`` without a thread, for callers on an event loop. Records appended while a
        group is being written wait for the next group, written as soon as that one commits:
        group commit without threads. Through the append function on PostgreSQL, on an asyncpg
        connection of the running loop; elsewhere ``append`` in a worker thread."""
        if self._function is None:
            await asyncio.to_thread(self._server_side)  # made once, maybe DDL: off the loop
        if not self._function:
            return await asyncio.to_thread(self.append, record, customer_id)
        request = self._request(record, customer_id)
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            writer = self._writers[loop] = _AsyncWriter(self, asyncpg_connect_args(self.engine))
        return await writer.append(request)

    async def close_async(self) -> None:
        """Close the running loop's writer connection."""
        writer = self._writers.pop(asyncio.get_running_loop(), None)
        if writer is not None:
            await writer.close()

    # --- reading ---

    def get(self, decision_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(audit_log).where(audit_log.c.decision_id == decision_id)
            ).first()
        return None if row is None else _entry(row)

    def pseudonym_of(self, customer_id: str) -> str | None:
        """The customer's current pseudonym; None once erased (or before their first record)."""
        with self.engine.connect() as connection:
            key = _keys(connection, [customer_id]).get(customer_id)
        return None if key is None else pseudonym(key, customer_id)

    def export(
        self,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        with_body: bool = True,
        batch: int = READ_BATCH,
    ) -> Iterator[dict[str, Any]]:
        """The records, in seq order, as JSON-able dicts: all of them, a customer's (under
        their current key: none once erased), and/or those recorded in ``[since, until)``,
        read ``batch`` at a time. ``body`` is the record's text as hashed (``record`` parsed):
        with it, ``verify_export`` checks a whole-log export without the database."""
        conditions: list[ColumnElement[bool]] = []
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("since and until must carry their time zone")
        if since is not None:
            conditions.append(audit_log.c.recorded_at >= since.astimezone(UTC))
        if until is not None:
            conditions.append(audit_log.c.recorded_at < until.astimezone(UTC))
        if customer_id is not None:
            ref = self.pseudonym_of(customer_id)
            if ref is None:
                return iter(())
            conditions.append(audit_log.c.customer_ref == ref)
        return (_entry(row, with_body) for row in self._rows(conditions, batch))

    def _rows(
        self, conditions: Sequence[ColumnElement[bool]] = (), batch: int = READ_BATCH
    ) -> Iterator[Any]:
        last = 0
        while True:
            # A connection per page: a slow consumer of an export holds no transaction open.
            with self.engine.connect() as connection:
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

    # --- checking ---

    def verify(self, checkpoint: Checkpoint | None = None) -> Verification:
        """Walk the whole chain, checking it against the stored checkpoints and ``checkpoint``
        (one kept outside the database is what proves the tail was not cut off)."""
        checkpoints = self.checkpoints() + ([checkpoint] if checkpoint is not None else [])
        links = (
            _Link(
                row.seq,
                row.decision_id,
                timestamp(row.recorded_at),
                row.customer_ref,
                row.prev_hash,
                row.record_hash,
                row.body,
            )
            for row in self._rows()
        )
        return _verify_chain(links, checkpoints)

    def checkpoint(self) -> Checkpoint:
        """Store and return the current head of the chain."""
        with self.engine.begin() as connection:
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
            _insert_if_absent(connection, audit_checkpoints, [row])
            stored = connection.execute(
                select(audit_checkpoints).where(audit_checkpoints.c.seq == seq)
            ).one()
        return _checkpoint(stored)

    def checkpoints(self) -> list[Checkpoint]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
            return [_checkpoint(row) for row in rows]


#: What says the database is not answering (a timeout on either side, a lost connection),
#: rather than that a group was refused (a duplicate decision, the chain's lock under
#: contention).
_STALLED = (
    OSError,  # TimeoutError among them
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.QueryCanceledError,
)


def _not_answering(error: SQLAlchemyError) -> bool:
    """Whether ``error`` says the database is not answering (a timeout on either side, a lost
    connection), rather than that a group was refused (the chain's lock under contention)."""
    cause = getattr(error, "orig", None)
    return isinstance(cause, _PsycopgOperational) and not isinstance(
        cause, _PsycopgLockNotAvailable
    )


class _AsyncWriter:
    """Group commit on one event loop: the callers' records wait in a queue; one task writes
    whatever is waiting in one call of the append function, settles each caller's future, and
    goes on while records keep coming."""

    def __init__(self, log: AuditLog, connect_args: dict[str, Any]) -> None:
        self.log = log
        self.connect_args = connect_args
        self.queue: deque[tuple[_Request, asyncio.Future[Appended]]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.connection: asyncpg.Connection | None = None
        # A group that timed out or lost its connection trips it: the records waiting behind
        # it, and new ones, fail at once instead of each waiting for a stalled database.
        self.breaker = Breaker("the audit log")

    async def append(self, request: _Request) -> Appended:
        if len(self.queue) >= MAX_WAITING:
            raise AuditWriteFailed("too many records are waiting for the audit log")
        try:
            self.breaker.admit()
        except StoreNotAnswering as error:
            raise AuditWriteFailed(str(error)) from error
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        entry = (request, future)
        self.queue.append(entry)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._drain())
        try:
            return await future
        except asyncio.CancelledError:
            # Its caller gave up before a group took it: it is never written.
            with contextlib.suppress(ValueError):
                self.queue.remove(entry)
            raise

    async def _drain(self) -> None:
        try:
            while self.queue:
                group = [
                    self.queue.popleft() for _ in range(min(self.log.max_batch, len(self.queue)))
                ]
                requests = [request for request, _ in group]
                outcomes: list[Appended | BaseException] = _failures(
                    requests, "the audit writer stopped before committing"
                )
                try:
                    outcomes = await self._write(requests)
                finally:
                    for (_, future), outcome in zip(group, outcomes, strict=True):
                        if future.done():  # its caller went away; the record stands
                            continue
                        if isinstance(outcome, BaseException):
                            future.set_exception(outcome)
                        else:
                            future.set_result(outcome)
                    with self.log._mutex:
                        self.log._count(sum(isinstance(o, Appended) for o in outcomes))
                if self.breaker.tripped:
                    self._fail_waiting()
        finally:
            self.task = None

    def _fail_waiting(self) -> None:
        """The group before them found the database not answering: the records waiting behind
        it fail now rather than each waiting for it in turn."""
        while self.queue:
            _, future = self.queue.popleft()
            if not future.done():
                future.set_exception(AuditWriteFailed("the audit log is not answering"))

    async def _write(self, requests: Sequence[_Request]) -> list[Appended | BaseException]:
        """``AuditLog._write`` for one group, awaiting the database instead of blocking."""
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                return list(await self._commit(requests))
            except SQLAlchemyError as error:
                then = _after_failure(error, requests, atomic=False, serialise=True)
            if then == "retry":
                continue
            if then == "alone":
                return [o for r in requests for o in await self._write([r])]
            return then
        return _failures(requests, "could not take the head of the audit chain under contention")

    async def _commit(self, requests: Sequence[_Request]) -> list[Appended]:
        call = _append_call(requests, self.log.lock_timeout_seconds)
        try:
            if self.connection is None or self.connection.is_closed():
                self.connection = await asyncpg.connect(**self.connect_args)
            rows = await self.connection.fetch(_PG_APPEND_ASYNC, *call)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            if isinstance(error, asyncpg.UndefinedFunctionError):
                self.log._function = None  # dropped since: made again for the next group
            if isinstance(error, _STALLED) and not isinstance(error, StoreNotAnswering):
                self.breaker.failed()
            self.abandon()  # its state is unknown: the next group opens a new one
            raise _asyncpg_as_sqlalchemy(error) from error
        except BaseException:
            self.abandon()
            raise
        self.breaker.succeeded()
        return _appended(call, [tuple(row) for row in rows], requests)

    def abandon(self) -> None:
        """Drop the connection at once, without the goodbye a failed one may never answer."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await close_or_drop(connection)


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
