"""The operational store (SQLite by default, PostgreSQL in production), opened with its tables
created and brought up to date."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from consent.stores.audit import append_only
from consent.stores.bounds import bounded_engine
from consent.stores.migration import add_missing_columns
from consent.stores.tables import metadata


def connect(url: str) -> Engine:
    """An engine for ``url`` with the tables created; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    else:
        # An API process runs up to 40 requests at once (Starlette's thread pool): with fewer
        # pooled connections they queue for one, and connections are opened and closed all the
        # time, which costs the process CPU under load.
        engine = bounded_engine(url, pool_pre_ping=True, pool_size=16, max_overflow=24)
    metadata.create_all(engine)
    add_missing_columns(engine)
    append_only.install(engine)
    return engine
