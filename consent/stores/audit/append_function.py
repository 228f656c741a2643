"""The append function kept in PostgreSQL (``append_function.sql``): a group of records in one
call, its own transaction and one round trip. It takes the chain's lock, reads the head, finds
or makes each customer's key, and computes the pseudonyms and the hashes itself, so the writer
sends only what it knows already (the bodies, escaped decision ids, the time) and gets back
each record's place in the chain. Where the function cannot be made (a role without CREATE on
the schema), the writers use the statements of ``writes.py`` in one transaction instead."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg
from psycopg import Error as PsycopgError
from psycopg.errors import UndefinedFunction as PsycopgUndefinedFunction
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import ProgrammingError

from consent.rules.chain import (
    GENESIS,
    PSEUDONYM_HEX_DIGITS,
    PSEUDONYM_PREFIX,
    Appended,
    new_key,
    timestamp,
)
from consent.stores.audit.failures import from_driver
from consent.stores.audit.pending import PendingRecord
from consent.stores.audit.writes import LOCK_NAMESPACE, lock_chain, lock_timeout
from consent.stores.tables import audit_log, customer_keys

log = logging.getLogger(__name__)

#: Versioned: a changed definition gets a new name, so processes of both versions can run.
NAME = "nextbest_audit_append_v2"
APPEND = (
    f"SELECT seq, prev_hash, record_hash, customer_ref FROM {NAME}"
    "(%s, %s, %s, %b, %b, %b, %b, %b, %b)"
)
#: ``APPEND`` in asyncpg's placeholders (the event loop's writer; asyncpg prepares it once per
#: connection and keeps it in the connection's statement cache).
APPEND_ASYNC = (
    f"SELECT seq, prev_hash, record_hash, customer_ref FROM {NAME}"
    "($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


def definition() -> str:
    """The statement that makes the function, its markers filled in."""
    template = resources.files("consent.stores.audit").joinpath("append_function.sql")
    return template.read_text("utf-8") % {
        "function": NAME,
        "audit_log": audit_log.name,
        "customer_keys": customer_keys.name,
        "lock_namespace": LOCK_NAMESPACE,
        "genesis": GENESIS,
        "pseudonym_prefix": PSEUDONYM_PREFIX,
        "pseudonym_hex_digits": PSEUDONYM_HEX_DIGITS,
        "inner_pad": "36" * 64,
        "outer_pad": "5c" * 64,
    }


def arguments(requests: Sequence[PendingRecord], lock_timeout_seconds: float) -> tuple[Any, ...]:
    """The function's arguments for a group (``APPEND``), decided now. Each customer is
    offered a new random key, which the function keeps only if they have none."""
    now = datetime.now(UTC)
    customers = [r.customer_id for r in requests]
    offered = {c: new_key() for c in set(customers)}
    return (
        lock_timeout(lock_timeout_seconds),
        now,
        timestamp(now),
        [r.decision_id for r in requests],
        [json.dumps(r.decision_id, ensure_ascii=False) for r in requests],
        customers,
        [offered[c] for c in customers],
        [r.placeholder for r in requests],
        [r.body for r in requests],
    )


def appended(
    call: tuple[Any, ...], rows: Sequence[Sequence[Any]], requests: Sequence[PendingRecord]
) -> list[Appended]:
    """What each caller of a group is told, from the rows the function returned for ``call``."""
    now = call[1]
    return [
        Appended(seq, prev, record_hash, request.decision_id, ref, now)
        for (seq, prev, record_hash, ref), request in zip(rows, requests, strict=True)
    ]


class AppendFunction:
    """Whether the function is there to write through, asked once and again after it was found
    dropped; and the call itself on a psycopg connection."""

    def __init__(self, engine: Engine, lock_timeout_seconds: float) -> None:
        self.engine = engine
        self.lock_timeout_seconds = lock_timeout_seconds
        self._usable: bool | None = None  # None: not known yet

    @property
    def usable(self) -> bool | None:
        """Whether groups go through the function; None until ``check`` has asked."""
        return self._usable

    def check(self) -> bool:
        """Whether groups go through the function (PostgreSQL; made on first use)."""
        if self._usable is None:
            self._usable = self.engine.dialect.name == "postgresql" and self._install()
        return self._usable

    def dropped(self) -> None:
        """The function was not found when called: made again before the next group."""
        self._usable = None

    def _install(self) -> bool:
        """Make the function unless it is there already; whether it can be used (not if the
        role may not create it; any other failure, such as the server being down, is raised and
        the question asked again next time). Made under the chain's lock, so processes starting
        together do not race to make it."""
        try:
            with self.engine.begin() as connection:
                lock_chain(connection, self.lock_timeout_seconds)
                found = connection.exec_driver_sql(
                    "SELECT to_regproc(%s) IS NOT NULL", (NAME,)
                ).scalar()
                if not found:
                    connection.exec_driver_sql(definition())
            return True
        except ProgrammingError as error:  # e.g. permission denied for schema
            log.warning("audit log: appending without the database function: %s", error.orig)
            return False

    def call(self, connection: Connection, requests: Sequence[PendingRecord]) -> list[Appended]:
        """The group in one call, on an autocommit psycopg connection (the call is its own
        transaction). A driver's error is raised as SQLAlchemy's."""
        raw: Any = connection.connection.driver_connection
        call = arguments(requests, self.lock_timeout_seconds)
        try:
            rows = raw.execute(APPEND, call, prepare=True).fetchall()
        except PsycopgError as error:
            if isinstance(error, PsycopgUndefinedFunction):
                self.dropped()
            raise from_driver(error, APPEND) from error
        return appended(call, rows, requests)

    async def fetch(self, connection: asyncpg.Connection, call: tuple[Any, ...]) -> list[Any]:
        """The call of ``arguments`` on an asyncpg connection; its rows."""
        try:
            return list(await connection.fetch(APPEND_ASYNC, *call))
        except asyncpg.UndefinedFunctionError:
            self.dropped()
            raise
