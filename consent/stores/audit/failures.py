"""What a failed audit write means: the errors its callers see, and how a writer reads a
database's error (try again, write each record alone, give up, or trip the breaker)."""

from __future__ import annotations

import logging
from typing import Literal

import asyncpg
from psycopg import IntegrityError as PsycopgIntegrityError
from psycopg import OperationalError as PsycopgOperationalError
from psycopg.errors import LockNotAvailable as PsycopgLockNotAvailable
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError, StatementError

from consent.rules.chain import Appended
from consent.stores.breaker import StoreNotAnswering

log = logging.getLogger(__name__)

#: Attempts to win the head of the chain against a writer that does not take the lock.
MAX_APPEND_ATTEMPTS = 50
CONTENDED = "could not take the head of the audit chain under contention"

#: What an outcome of a group's write is for each of its records.
Outcome = Appended | BaseException


class AuditWriteFailed(RuntimeError):
    """The record was not committed: the decision must not be returned or published."""

    code = "audit_unavailable"


class DuplicateDecision(AuditWriteFailed):
    """The log already holds a record with this decision id; nothing was written."""

    code = "duplicate_decision"


def cause_of(error: SQLAlchemyError) -> BaseException:
    """The driver's error behind ``error``, or ``error`` itself when it has none."""
    orig = error.orig if isinstance(error, StatementError) else None
    return orig or error


def failures(count: int, message: str, cause: BaseException | None = None) -> list[Outcome]:
    """``count`` failures with ``message``: one exception per caller, as each is raised in
    its own thread."""
    outcomes: list[Outcome] = []
    for _ in range(count):
        failure = AuditWriteFailed(message)
        failure.__cause__ = cause
        outcomes.append(failure)
    return outcomes


def after_failure(
    error: SQLAlchemyError, count: int, *, atomic: bool, serialise: bool
) -> Literal["retry", "alone"] | list[Outcome]:
    """What a writer does after its group of ``count`` records failed: try again ("retry": a
    writer without the lock took the head), write each record alone ("alone": one repeats a
    logged decision, so only it fails), or report these outcomes."""
    orig = cause_of(error)
    if isinstance(error, IntegrityError):
        if "decision_id" not in str(orig):
            return "retry"
        if atomic or count == 1:
            return [DuplicateDecision(str(orig)) for _ in range(count)]
        return "alone"
    if isinstance(error, OperationalError) and not serialise and "locked" in str(orig):
        return "retry"  # the unserialised (naive) writer lost the race for SQLite's lock
    log.error("audit write of %d records failed: %s", count, orig)
    return failures(count, f"the audit log could not be written: {orig}", error)


def from_driver(error: Exception, statement: str) -> SQLAlchemyError:
    """A driver's error (psycopg's or asyncpg's) in ``statement`` as SQLAlchemy would report
    it, so the writers' failure paths hold whichever driver wrote."""
    integrity = isinstance(error, PsycopgIntegrityError | asyncpg.IntegrityConstraintViolationError)
    kind = IntegrityError if integrity else OperationalError
    return kind(statement, None, error)


def not_answering(error: SQLAlchemyError) -> bool:
    """Whether ``error`` (through psycopg) says the database is not answering (a timeout on
    either side, a lost connection), rather than that a group was refused (the chain's lock
    under contention)."""
    orig = cause_of(error)
    return isinstance(orig, PsycopgOperationalError) and not isinstance(
        orig, PsycopgLockNotAvailable
    )


#: What says the database is not answering through asyncpg (a timeout on either side, a lost
#: connection), rather than that a group was refused (a duplicate decision, the chain's lock
#: under contention).
_STALLED = (
    OSError,  # TimeoutError among them
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.QueryCanceledError,
)


def stalled(error: BaseException) -> bool:
    """``not_answering`` for asyncpg's errors. A breaker's refusal is not a stall of its own."""
    return isinstance(error, _STALLED) and not isinstance(error, StoreNotAnswering)


def ended_by_server(error: BaseException) -> bool:
    """Whether asyncpg's ``error`` says the server closed a connection that was open (as
    opposed to a timeout, or a connection that could not be made)."""
    return isinstance(
        error,
        asyncpg.ConnectionDoesNotExistError | asyncpg.exceptions.OperatorInterventionError,
    )
