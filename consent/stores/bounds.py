"""Bounded waits on PostgreSQL. A database that stops answering must not hold a caller for
longer than these; each is a named constant, and a URL that sets the same parameter wins."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from sqlalchemy import Dialect, Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

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
    def _bounds(
        _dialect: Dialect, _record: ConnectionPoolEntry, args: list[Any], params: dict[str, Any]
    ) -> BoundedConnection:
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
