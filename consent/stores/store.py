"""The operational store's tables (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.exc import OperationalError

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored as UTC on every backend and read back as an aware UTC datetime.

    SQLite keeps a datetime as its wall-clock text and drops the offset, so a ``+14:00`` time
    stored as given would read back fourteen hours late; PostgreSQL hands ``timestamptz`` back
    in the session's zone. Converting on the way in and out makes both the same. A naive
    datetime is refused: which zone it meant is unknown, and guessing is how times shift."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"the operational store takes aware datetimes only, not {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite's text has no offset: it was written as UTC above.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


consent_history = Table(
    "consent_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("customer_id", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    # When the bank recorded the entry (the registry's clock as it accepted it): what orders
    # the history, so a withdrawal always wins over a grant recorded before it, whatever time a
    # device claims.
    Column("recorded_at", UtcDateTime(), nullable=False),
    # When the customer gave it (an event's occurred_at, the API body's time): evidence only.
    # Unknown (NULL) for entries written before it was kept: read as recorded_at.
    Column("given_at", UtcDateTime(), nullable=True),
    Column("source", String(64), nullable=False),
    Column("notice_version", String(32), nullable=False),
    # Who recorded it: ``<role>:<API key name>``, or the stream or the loader.
    Column("recorded_by", String(80), nullable=True),
    # The stream event it came from: a redelivery or a replay records it only once.
    Column("event_id", String(128), nullable=True, unique=True),
    Index("ix_consent_customer", "customer_id", "purpose", "channel", "id"),
)

customers = Table(
    # What the gate needs to know about a customer besides consent (the bank's customer master
    # is the source; `nextbest load` and profile updates write it).
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("household_id", String(64), nullable=True, index=True),
    Column("rm_id", String(64), nullable=True, index=True),
    Column("facts", Text, nullable=False),  # CustomerFacts as JSON
    Column("updated_at", UtcDateTime(), nullable=False),
)

contact_history = Table(
    # Impressions, accepts, declines and dismissals from feedback, and contacts made: they
    # drive contact caps, cool-offs and "already declined" across channels and the household.
    "contact_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("customer_id", String(64), nullable=False),
    Column("household_id", String(64), nullable=True),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("action_id", String(64), nullable=True),
    Column("need", String(16), nullable=True),
    Column("decision_id", String(64), nullable=True),
    # Who reported it (feedback: ``<role>:<API key name>``); None for the bank's own contacts.
    Column("recorded_by", String(80), nullable=True),
    Index("ix_contact_customer", "customer_id", "occurred_at"),
    Index("ix_contact_household", "household_id", "occurred_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    # The sequence number is assigned by the writer, and both it and prev_hash are unique: two
    # writers racing for the same head cannot both succeed, so the chain never forks. Writers
    # also serialise on a lock (consent/stores/audit.py); the constraints are the last line of
    # defence.
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("decision_id", String(64), nullable=False, unique=True),
    Column("recorded_at", UtcDateTime(), nullable=False),
    # A pseudonym ("cref:...") from the customer's key in customer_keys, never the customer id.
    Column("customer_ref", String(128), nullable=False),
    Column("prev_hash", String(80), nullable=False, unique=True),
    Column("record_hash", String(80), nullable=False),
    Column("body", Text, nullable=False),
    # A customer's export pages through their records in seq order; a time range by recorded_at.
    Index("ix_audit_customer", "customer_ref", "seq"),
    Index("ix_audit_recorded_at", "recorded_at"),
)

# Decision records are tens of kilobytes of repetitive JSON: PostgreSQL compresses them with
# lz4 three times faster than with its default (pglz), to about the same size, which is what
# lets the audit writer keep up. A server without lz4 (or before 14) keeps its default.
event.listen(
    audit_log,
    "after_create",
    # Compressed, a record fits in the row itself (STORAGE MAIN): stored out of line it cost
    # an insert into the TOAST table and its index as well.
    DDL("ALTER TABLE audit_log ALTER COLUMN body SET STORAGE MAIN").execute_if(
        dialect="postgresql"
    ),
)
event.listen(
    audit_log,
    "after_create",
    DDL(
        "DO $$ BEGIN EXECUTE 'ALTER TABLE audit_log ALTER COLUMN body SET COMPRESSION lz4'; "
        "EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'audit_log.body keeps the default compression'; "
        "END $$"
    ).execute_if(dialect="postgresql"),
)

customer_keys = Table(
    # One random key per customer: the audit log names a customer only by an HMAC of their id
    # under this key. Deleting the key (right to erasure) leaves the chain intact and its records
    # tied to nobody; a customer who comes back gets a new key.
    "customer_keys",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("key", LargeBinary(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

audit_checkpoints = Table(
    # Heads of the chain as they were: truncating the tail of the log cannot be seen in the chain
    # itself, only against a head kept from before (here, and exported to outside parties).
    "audit_checkpoints",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    ),
    Column("head_hash", String(80), nullable=False),
    Column("records", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("taken_at", UtcDateTime(), nullable=False),
)


erasure_register = Table(
    # Customers who were erased (right to erasure), so that no load, backfill, replay or
    # training brings them back. Named only by a keyed hash (consent/stores/erasure.py), never by
    # id.
    "erasure_register",
    metadata,
    Column("ref", String(80), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

erasure_register_key = Table(
    # The register's one key (row id 1), made on first use.
    "erasure_register_key",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


alerts = Table(
    # Relationship-manager alerts (service/usecases/alerter.py): raised by the stream after the gate
    # passed them and their decision was logged; an RM works them off in the inbox.
    "alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("decision_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("household_id", String(64), nullable=True),
    Column("rm_id", String(64), nullable=False),
    # What one open alert per customer is kept to: the need, or a service action's id.
    Column("topic", String(64), nullable=False),
    Column("need", String(16), nullable=True),
    Column("action_id", String(64), nullable=False),
    Column("score", Float, nullable=True),
    Column("priority", Float, nullable=False),
    Column("status", String(16), nullable=False),  # queued | open | closed | expired
    Column("created_at", UtcDateTime(), nullable=False),
    Column("opened_at", UtcDateTime(), nullable=True),
    Column("expires_at", UtcDateTime(), nullable=False),
    Column("body", Text, nullable=False),  # the rest as JSON: reasons, talking points, triggers
    Column("disposition", String(32), nullable=True),
    Column("disposition_note", Text, nullable=True),
    Column("disposed_at", UtcDateTime(), nullable=True),
    Column("disposed_by", String(64), nullable=True),
    Index("ix_alerts_rm", "rm_id", "status", "created_at"),
    Index("ix_alerts_customer", "customer_id", "topic", "created_at"),
    Index("ix_alerts_household", "household_id", "topic", "created_at"),
)


# --- Bounded waits. A database that stops answering must not hold a caller for longer than
# these; each is a named constant, and a URL that sets the same parameter wins. ---

#: How long a new psycopg connection may take (libpq's ``connect_timeout``: whole seconds,
#: and libpq makes anything under 2 into 2); the decision path's, the shortest. A URL's own
#: ``connect_timeout`` wins.
CONNECT_TIMEOUT_S = 5
DECISION_PSYCOPG_CONNECT_TIMEOUT_S = 2
#: How long a thread waits for one of the pool's connections before giving up.
POOL_TIMEOUT_S = 5.0
#: Server-side bounds of every connection, sent at startup in ``options`` (the URL's own
#: ``options`` come after them, so a ``-c statement_timeout=...`` there wins). Generous: the
#: same engine runs batch work (loads, exports, verification walk the log in batches of their
#: own); the decision path has tighter ones (``DECISION_*``).
STATEMENT_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 15.0
#: A transaction left open by a stuck client is ended by the server (and its locks released).
IDLE_IN_TRANSACTION_TIMEOUT_S = 60.0

#: The decision path (the API's gate read and audit append, on asyncpg): a decision must answer
#: within about two seconds even when the database stops answering, so each wait is a second:
#: the connection (asyncpg's ``timeout``; a URL's ``connect_timeout`` wins), and each statement,
#: on the server (``statement_timeout``) and on the client (``command_timeout``: a server that
#: stalled never sends the cancellation's answer, so the client does not wait for it).
DECISION_CONNECT_TIMEOUT_S = 1.0
DECISION_STATEMENT_TIMEOUT_S = 1.0


#: What every connection asks of the server, and what the decision path's connections ask.
SERVER_BOUNDS = {
    "statement_timeout": STATEMENT_TIMEOUT_S,
    "lock_timeout": LOCK_TIMEOUT_S,
    "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT_S,
}
DECISION_SERVER_BOUNDS = {
    "statement_timeout": DECISION_STATEMENT_TIMEOUT_S,
    "lock_timeout": DECISION_STATEMENT_TIMEOUT_S,
    "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT_S,
}


def with_bounds(options: Any, bounds: dict[str, float]) -> str:
    """Startup ``options`` with ``bounds`` (seconds, sent as milliseconds) ahead of the given
    ones: the server applies ``-c`` settings in order, so a URL's own setting wins."""
    ours = " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in bounds.items())
    return f"{ours} {options}" if isinstance(options, str) and options else ours


#: How much longer than the server's ``statement_timeout`` a psycopg connection waits for an
#: answer: when the network works the server's cancellation comes first; a stalled network
#: never delivers it, and then the client gives up and closes the connection.
CLIENT_GRACE_S = 1.0


class ServerNotAnswering(psycopg.OperationalError):
    """The server did not answer within the client's bound; the connection is closed."""


class BoundedConnection(psycopg.Connection[Any]):
    """psycopg's connection with a bound on every wait for the server (psycopg's own ``wait``
    timeout). Past it the connection is closed and the caller gets an ``OperationalError`` on
    a closed connection, which SQLAlchemy takes for a disconnect: the pool drops it."""

    #: Seconds; None waits as long as psycopg would (the operator turned the timeout off).
    client_timeout_s: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        try:
            return super().wait(
                gen, interval, self.client_timeout_s if timeout is None else timeout
            )
        except psycopg.errors._WaitTimeout:  # psycopg's own name for it, as its code uses it
            self.close()
            raise ServerNotAnswering(
                f"the server did not answer within {self.client_timeout_s} s; connection closed"
            ) from None


_STATEMENT_TIMEOUT = re.compile(r"(?:-c\s*|--)statement_timeout=(\d+(?:\.\d+)?)([a-z]*)")
_UNIT_MS = {"": 1.0, "us": 0.001, "ms": 1.0, "s": 1e3, "min": 6e4, "h": 3.6e6, "d": 8.64e7}


def client_bound(options: str) -> float | None:
    """The client's bound for connections started with ``options``: the last
    ``statement_timeout`` there (the server's) plus ``CLIENT_GRACE_S``; None if it is 0 (off)."""
    found = _STATEMENT_TIMEOUT.findall(options)
    if not found:
        return STATEMENT_TIMEOUT_S + CLIENT_GRACE_S
    value, unit = found[-1]
    milliseconds = float(value) * _UNIT_MS.get(unit, 1.0)
    return None if milliseconds == 0 else milliseconds / 1000 + CLIENT_GRACE_S


def bounded_engine(
    url: str,
    bounds: dict[str, float] = SERVER_BOUNDS,
    connect_timeout: int = CONNECT_TIMEOUT_S,
    **kwargs: Any,
) -> Engine:
    """A PostgreSQL engine (psycopg) whose every wait is bounded: the connection, a checkout
    from the pool, each statement and lock on the server (``bounds``), each unless the URL
    says otherwise, and each wait for an answer on the client (``BoundedConnection``)."""
    engine = create_engine(url, pool_timeout=POOL_TIMEOUT_S, **kwargs)

    @event.listens_for(engine, "do_connect")
    def _bounds(_dialect, _record, args, params):  # type: ignore[no-untyped-def]
        params["options"] = with_bounds(params.get("options"), bounds)
        params.setdefault("connect_timeout", connect_timeout)
        connection = BoundedConnection.connect(*args, **params)
        connection.client_timeout_s = client_bound(params["options"])
        return connection

    return engine


def asyncpg_connect_args(engine: Engine) -> dict[str, Any]:
    """``asyncpg.connect`` arguments for ``engine``'s PostgreSQL database (the API's event
    loop talks to it with asyncpg): its URL as a libpq DSN, which asyncpg reads itself (host,
    port, user, password, database, ``sslmode`` and the other ``ssl*`` parameters) and whose
    other query parameters it sends as startup settings (``options``, as ``-csearch_path=``,
    and ``application_name`` work as they do with libpq). ``connect_timeout`` (seconds) is a
    client setting, not the server's: it becomes asyncpg's ``timeout``. The decision path's
    bounds apply (``DECISION_*``), each unless the URL sets its own."""
    url = engine.url
    query = dict(url.query)
    timeout = query.pop("connect_timeout", None)
    query["options"] = with_bounds(query.get("options"), DECISION_SERVER_BOUNDS)
    dsn = url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    seconds = float(timeout if isinstance(timeout, str) else DECISION_CONNECT_TIMEOUT_S)
    # ``command_timeout`` bounds every statement on the client, and asyncpg's own
    # cancellation request after a timeout (which a stalled server would never answer).
    return {"dsn": dsn, "timeout": seconds, "command_timeout": DECISION_STATEMENT_TIMEOUT_S}


def connect(url: str) -> Engine:
    """An engine for ``url`` with the tables created; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    else:
        # An API process runs up to 40 requests at once (Starlette's thread pool): with fewer
        # pooled connections they queue for one and connections are opened and closed all the
        # time (measured under load: 5% of the process's time).
        engine = bounded_engine(url, pool_pre_ping=True, pool_size=16, max_overflow=24)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


#: Columns added since the first release of each table, as ``ALTER TABLE ... ADD COLUMN``
#: clauses: a store made before them (the demo's SQLite, a dev PostgreSQL) gains them at
#: connect.
_ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    consent_history.name: (
        ("given_at", "TIMESTAMP WITH TIME ZONE"),
        ("recorded_by", "VARCHAR(80)"),
        ("event_id", "VARCHAR(128)"),
    ),
    contact_history.name: (("recorded_by", "VARCHAR(80)"),),
}


def _add_missing_columns(engine: Engine) -> None:
    """Bring a store made by an earlier version up to these tables; idempotent, and safe
    when several processes start at once (PostgreSQL: ``IF NOT EXISTS``; on SQLite a column
    another process added since we looked fails as a duplicate and is skipped)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspect(engine).get_columns(table)}
        missing = [(name, kind) for name, kind in columns if name not in present]
        for name, kind in missing:
            _add_column(engine, table, name, kind)
        if missing and table == consent_history.name:
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS ux_{table}_event_id ON {table} (event_id)"
                )


def _add_column(engine: Engine, table: str, name: str, kind: str) -> None:
    postgres = engine.dialect.name == "postgresql"
    clause = f"ADD COLUMN IF NOT EXISTS {name}" if postgres else f"ADD COLUMN {name}"
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {table} {clause} {kind}")
    except OperationalError as error:
        if "duplicate column" not in str(error).lower():
            raise
