"""The erasure register: which customers were erased, so that nothing brings them back.

An erased customer's events stay in the event topic until its retention ends, in the bank's
archives and extracts, and are replayed by every rebuild. Every path that writes customer data
from those sources (the stream worker, ``load``, ``backfill``, training sets, batch scoring)
drops what belongs to a customer in the register.

The register holds no customer id: an entry is ``erased:`` + keyed BLAKE2b-256 of the id (its
MAC mode, RFC 7693; cheaper than HMAC-SHA256, and the stream worker pays it for every
customer of every batch once anyone is erased) under one random key kept in the operational
store (``erasure_register_key``). A copy of the register alone (a dump of that table, a log
line, the audit log's erasure records) tells nobody who was erased; whoever can read the key
can test a guessed id, and ids are easy to guess, so against a reader of the whole store it
hides little.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from consent.stores.tables import erasure_register, erasure_register_key

REF_PREFIX = "erased:"
KEY_BYTES = 32
DIGEST_BYTES = 32
_KEY_ROW = 1


def _insert_ignoring_duplicates(connection: Connection, table: Table, row: dict[str, Any]) -> None:
    dialect = connection.dialect.name
    insert: Any = postgresql_insert if dialect == "postgresql" else sqlite_insert
    connection.execute(insert(table).values(**row).on_conflict_do_nothing())


def register_key(connection: Connection) -> bytes:
    """The register's key, made on first use (racing makers agree on the first one stored)."""
    row = {"id": _KEY_ROW, "key": secrets.token_bytes(KEY_BYTES), "created_at": datetime.now(UTC)}
    found = connection.execute(
        select(erasure_register_key.c.key).where(erasure_register_key.c.id == _KEY_ROW)
    ).scalar()
    if found is None:
        _insert_ignoring_duplicates(connection, erasure_register_key, row)
        found = connection.execute(
            select(erasure_register_key.c.key).where(erasure_register_key.c.id == _KEY_ROW)
        ).scalar_one()
    return bytes(found)


def _digest(key: bytes, customer_id: str) -> bytes:
    return hashlib.blake2b(customer_id.encode(), key=key, digest_size=DIGEST_BYTES).digest()


def reference(key: bytes, customer_id: str) -> str:
    return REF_PREFIX + _digest(key, customer_id).hex()


def record_erasure(connection: Connection, customer_id: str) -> str:
    """Enter the customer in the register in the caller's transaction (the erasure's); the
    register's reference. Erasing twice leaves one entry."""
    ref = reference(register_key(connection), customer_id)
    _insert_ignoring_duplicates(
        connection, erasure_register, {"ref": ref, "erased_at": datetime.now(UTC)}
    )
    return ref


@dataclass(frozen=True)
class Erased:
    """The register as read at one moment: ``customer_id in erased``."""

    key: bytes
    refs: frozenset[str]
    _digests: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digests = frozenset(bytes.fromhex(r.removeprefix(REF_PREFIX)) for r in self.refs)
        object.__setattr__(self, "_digests", digests)

    def __contains__(self, customer_id: object) -> bool:
        return bool(self.among([customer_id])) if isinstance(customer_id, str) else False

    def __bool__(self) -> bool:
        return bool(self.refs)

    def among(self, customer_ids: Iterable[str]) -> set[str]:
        """Those of ``customer_ids`` that were erased."""
        if not self._digests:
            return set()
        key, digests = self.key, self._digests
        return {c for c in set(customer_ids) if _digest(key, c) in digests}


#: A ``customer_id`` in a record that is not valid JSON or not a valid event.
_CUSTOMER_FIELD = re.compile(rb'"customer_id"\s*:\s*"([^"\\]{1,64})"')


def candidate_ids(key: bytes | None, value: bytes | None) -> set[str]:
    """Whom a raw record may belong to: its key (a customer id, by the event contract) and any
    ``customer_id`` written in it, even if it does not parse."""
    found = {m.decode("utf-8", "replace") for m in _CUSTOMER_FIELD.findall(value or b"")}
    if key is not None:
        found.add(key.decode("utf-8", "replace"))
    return found


class ErasureRegister:
    """Reads of the register. ``current()`` costs one count per call and rereads the entries
    only when an erasure was added since (entries are never removed), so the stream worker
    asks it for every batch and sees an erasure from the next batch on."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._read: Erased | None = None

    def current(self) -> Erased:
        with self.engine.connect() as connection:
            count = connection.execute(select(func.count()).select_from(erasure_register)).scalar()
            with self._lock:
                if self._read is not None and len(self._read.refs) == count:
                    return self._read
            if count == 0:
                erased = Erased(b"", frozenset())
            else:
                refs = connection.execute(select(erasure_register.c.ref)).scalars()
                key = connection.execute(select(erasure_register_key.c.key)).scalar_one()
                erased = Erased(bytes(key), frozenset(refs))
        with self._lock:
            self._read = erased
        return erased

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self.current()
