"""What the gate reads about one customer before a decision: consents, the directory entry and
recent contact history of the customer and their household.

On PostgreSQL the three reads are one statement (on an autocommit connection kept in a pool of
its own): the decision API's hot path. Through SQLAlchemy each read cost a checkout with a ping,
the statement and a rollback: nine round trips, and the largest share of a decision's CPU
(cProfile). Elsewhere (SQLite, the embedded default) the reads go through ``ConsentRegistry``,
``CustomerDirectory`` and ``ContactHistory``, which are also what the PostgreSQL reads are
tested against. The API reads on its event loop with ``read_async``: the same statement on
asyncpg connections, so a decision waits for the database without holding a thread (asyncpg
rather than psycopg's asyncio connections, which cost more of the API's CPU per decision; see
docs/decisions.md).

There is no cache: a withdrawal applies to the very next decision, in every process.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from psycopg import OperationalError as _PsycopgOperational
from sqlalchemy import Engine

from consent.rules.model import ConsentGiven, ContactRecord, CustomerFacts
from consent.stores.bounds import (
    DECISION_PSYCOPG_CONNECT_TIMEOUT_S,
    DECISION_SERVER_BOUNDS,
    ServerNotAnswering,
    asyncpg_connect_args,
    bounded_engine,
)
from consent.stores.breaker import Breaker, close_or_drop
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory, KnownCustomer
from consent.stores.registry import ConsentRegistry
from consent.stores.tables import consent_history, contact_history, customers

#: Connections the PostgreSQL reader keeps (a decision holds one for a single round trip): as
#: many as decisions an API process runs at once
#: (``service.entrypoints.api.decision_runner.DECISION_THREADS``).
#: Beyond the kept ones, connections are opened and closed per use.
READ_POOL_SIZE = 16
READ_POOL_OVERFLOW = 16

# One statement, one row: each read as JSON (three statements in a psycopg pipeline cost more
# of our CPU than the server spent on them). Consents: the latest choice per (purpose, channel),
# recorded last in time wins, ties by write order. Contacts: the customer's and their
# household's, oldest first.
_PG_READ = (
    "SELECT "
    "(SELECT coalesce(json_agg(json_build_array("
    "id, customer_id, purpose, channel, granted, recorded_at, source, notice_version, "
    "given_at, recorded_by, event_id)), '[]') "
    "FROM (SELECT DISTINCT ON (purpose, channel) * "
    f"FROM {consent_history.name} WHERE customer_id = %(id)s "
    "ORDER BY purpose, channel, recorded_at DESC, id DESC) AS latest), "
    "(SELECT json_build_array(household_id, rm_id, facts) "
    f"FROM {customers.name} WHERE customer_id = %(id)s), "
    "(SELECT coalesce(json_agg(json_build_array("
    "occurred_at, channel, kind, action_id, need, customer_id) ORDER BY occurred_at, id), '[]') "
    f"FROM {contact_history.name} "
    "WHERE (customer_id = %(id)s OR household_id = "
    f"(SELECT household_id FROM {customers.name} WHERE customer_id = %(id)s)) "
    "AND occurred_at >= %(since)s)"
)
_CONSENT_FIELDS = (
    "id",
    "customer_id",
    "purpose",
    "channel",
    "granted",
    "recorded_at",
    "source",
    "notice_version",
    "given_at",
    "recorded_by",
    "event_id",
)


@dataclass(frozen=True)
class GateRead:
    consents: dict[tuple[str, str], ConsentGiven]
    known: KnownCustomer | None
    contacts: tuple[ContactRecord, ...]


class GateReads:
    """The gate's inputs for one customer, through the stores' own classes."""

    def __init__(
        self, registry: ConsentRegistry, directory: CustomerDirectory, contacts: ContactHistory
    ) -> None:
        self.registry = registry
        self.directory = directory
        self.contacts = contacts

    #: Whether ``read_async`` reads without a thread (PostgreSQL only).
    asynchronous = False

    async def read_async(self, customer_id: str, now: datetime, days: int) -> GateRead:
        raise NotImplementedError("these reads have no asynchronous form")

    async def close_async(self) -> None:
        """Close what ``read_async`` opened on the running event loop."""

    def read(self, customer_id: str, now: datetime, days: int) -> GateRead:
        consents = self.registry.current(customer_id)
        known = self.directory.get(customer_id)
        household = known.household_id if known else None
        return GateRead(consents, known, self.contacts.recent(customer_id, household, now, days))

    def read_many(
        self, customer_ids: Iterable[str], now: datetime, days: int
    ) -> dict[str, GateRead]:
        """``read`` of each of ``customer_ids``, in a few queries for all of them (batch work:
        ranking a day's opportunities)."""
        ids = sorted(set(customer_ids))
        consents = self.registry.current_many(ids)
        known = self.directory.get_many(ids)
        households = {c: k.household_id if (k := known.get(c)) else None for c in ids}
        contacts = self.contacts.recent_many(households, now, days)
        return {c: GateRead(consents[c], known.get(c), contacts[c]) for c in ids}

    def close(self) -> None:
        pass


class PostgresGateReads(GateReads):
    """PostgreSQL: the three reads in one statement, on pooled autocommit connections (no
    transaction is left open, so nothing is rolled back on return, and no ping is sent before
    use: a connection that turns out dead is dropped and the reads retried once on a new one)."""

    def __init__(
        self,
        registry: ConsentRegistry,
        directory: CustomerDirectory,
        contacts: ContactHistory,
        url: str,
    ) -> None:
        super().__init__(registry, directory, contacts)
        self.engine: Engine = bounded_engine(
            url,
            bounds=DECISION_SERVER_BOUNDS,
            connect_timeout=DECISION_PSYCOPG_CONNECT_TIMEOUT_S,
            isolation_level="AUTOCOMMIT",
            pool_size=READ_POOL_SIZE,
            max_overflow=READ_POOL_OVERFLOW,
            pool_reset_on_return=None,
        )
        self.breaker = Breaker("the gate's read")
        # Asyncio connections belong to the loop they were opened on (the API has one per
        # process; tests run several).
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncPool] = (
            weakref.WeakKeyDictionary()
        )

    def read(self, customer_id: str, now: datetime, days: int) -> GateRead:
        self.breaker.admit()
        since = now - timedelta(days=days)
        for attempt in (1, 2):
            fairy = self.engine.raw_connection()
            try:
                raw: Any = fairy.driver_connection
                row = raw.execute(_PG_READ, {"id": customer_id, "since": since}).fetchone()
            except _PsycopgOperational as error:
                fairy.invalidate()  # closed, not pooled again
                if attempt == 2 or isinstance(error, ServerNotAnswering):
                    self.breaker.failed()  # no new connection does better than the bound
                    raise
                continue
            finally:
                fairy.close()
            self.breaker.succeeded()
            return _gate_read(customer_id, *row)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.engine.dispose()

    # --- on an event loop (the API): the same statement on asyncio connections ---

    asynchronous = True

    async def read_async(self, customer_id: str, now: datetime, days: int) -> GateRead:
        """``read`` without a thread: on asyncpg connections of the running loop, kept like
        the pool's (``READ_POOL_SIZE`` idle at most); a connection that fails is dropped and
        the read retried once on a new one. Each wait is bounded (``consent.stores.bounds``'s
        ``DECISION_*``); a timeout or a lost connection trips the breaker, which refuses reads
        at once until a probe is answered, and drops the kept connections, which may be stuck
        behind the same stalled network."""
        self.breaker.admit()
        pool = self._pool()
        since = now - timedelta(days=days)
        for attempt in (1, 2):
            try:
                connection = await pool.take()
            except (TimeoutError, asyncio.CancelledError, *_CONNECTION_LOST):
                self._stalled(pool)
                raise
            try:
                row = await connection.fetchrow(_PG_READ_ASYNC, customer_id, since)
            except (TimeoutError, asyncpg.QueryCanceledError):  # no new connection does better
                connection.terminate()
                self._stalled(pool)
                raise
            except _CONNECTION_LOST:
                connection.terminate()
                if attempt == 2:
                    self._stalled(pool)
                    raise
                continue
            except asyncio.CancelledError:
                # The decision's deadline passed before the database answered: as good a sign
                # of a stall as a timeout of its own (and the connection's state is unknown).
                connection.terminate()
                self._stalled(pool)
                raise
            except BaseException:
                connection.terminate()
                raise
            pool.give_back(connection)
            self.breaker.succeeded()
            assert row is not None, "the statement always returns one row"
            consents, known, contacts = row
            return _gate_read(
                customer_id,
                json.loads(consents),
                None if known is None else json.loads(known),
                json.loads(contacts),
            )
        raise AssertionError("unreachable")

    def _stalled(self, pool: _AsyncPool) -> None:
        self.breaker.failed()
        pool.discard()

    def _pool(self) -> _AsyncPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _AsyncPool(asyncpg_connect_args(self.engine), READ_POOL_SIZE)
        return pool

    async def close_async(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()


#: The statement in asyncpg's placeholders (asyncpg prepares it once per connection and keeps
#: it in the connection's statement cache). The JSON comes back as text.
_PG_READ_ASYNC = _PG_READ.replace("%(id)s", "$1").replace("%(since)s", "$2")

#: What says a connection is gone rather than the statement wrong: the server closed it (a
#: restart, an administrator), or the socket or the protocol failed under it.
_CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


class _AsyncPool:
    """asyncpg connections for one event loop: at most ``keep`` kept idle; beyond them,
    connections are opened for one use and closed. (``asyncpg.Pool`` resets each connection on
    release with a round trip of its own; these connections are in autocommit and carry no
    session state, so there is nothing to reset.)"""

    def __init__(self, connect_args: dict[str, Any], keep: int) -> None:
        self.connect_args = connect_args
        self.keep = keep
        self.idle: deque[asyncpg.Connection] = deque()

    async def take(self) -> asyncpg.Connection:
        while self.idle:
            connection = self.idle.pop()
            if not connection.is_closed():
                return connection
        return await asyncpg.connect(**self.connect_args)

    def give_back(self, connection: asyncpg.Connection) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(connection)
        else:
            asyncio.get_running_loop().create_task(close_or_drop(connection))

    def discard(self) -> None:
        """Drop the kept connections without a goodbye they might never answer."""
        while self.idle:
            self.idle.pop().terminate()

    async def close(self) -> None:
        while self.idle:
            await close_or_drop(self.idle.pop())


def _gate_read(
    customer_id: str, consent_rows: list[Any], customer_row: Any, contact_rows: list[Any]
) -> GateRead:
    """The reads from their JSON (times as ISO text, facts as the stored JSON text)."""
    consents: dict[tuple[str, str], ConsentGiven] = {}
    for row in consent_rows:
        entry = ConsentGiven.model_validate(dict(zip(_CONSENT_FIELDS, row, strict=True)))
        consents[(entry.purpose, entry.channel)] = entry
    known = None
    if customer_row is not None:
        household, rm, facts = customer_row
        known = KnownCustomer(customer_id, household, rm, CustomerFacts.model_validate_json(facts))
    contacts = tuple(
        ContactRecord(
            occurred_at=_aware(datetime.fromisoformat(occurred)),
            channel=channel,
            kind=kind,
            action_id=action_id,
            need=need,
            household=who != customer_id,
        )
        for occurred, channel, kind, action_id, need, who in contact_rows
    )
    return GateRead(consents, known, contacts)


def _aware(moment: datetime) -> datetime:
    """In UTC: PostgreSQL's JSON writes times in the session's zone."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def gate_reads(
    registry: ConsentRegistry, directory: CustomerDirectory, contacts: ContactHistory, url: str
) -> GateReads:
    """The fastest reader for the store at ``url``."""
    if url.startswith("postgresql"):
        return PostgresGateReads(registry, directory, contacts, url)
    return GateReads(registry, directory, contacts)
