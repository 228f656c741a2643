"""Group commit in threads: ``append`` returns only once the record's transaction has committed,
and concurrent appends in a process share transactions.

One caller at a time leads, writing every waiting record in one transaction that takes the
chain's lock (``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), reads the
head once and inserts the batch with consecutive seqs; then it releases each waiting caller with
its ``Appended`` or, if the transaction failed, an ``AuditWriteFailed``, and hands the lead to
the next waiting caller, so no thread has to stay behind as the writer. On PostgreSQL that
transaction is one call of the append function (``append_function.py``). Callers serialise
their records themselves, outside the lock (``PendingRecord``).

A group that finds the database not answering trips the breaker: the groups queued behind it,
and new callers, fail at once instead of each waiting out the bounds in turn."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from consent.rules.chain import Appended
from consent.stores.audit.append_function import AppendFunction
from consent.stores.audit.failures import (
    CONTENDED,
    MAX_APPEND_ATTEMPTS,
    AuditWriteFailed,
    Outcome,
    after_failure,
    failures,
    not_answering,
)
from consent.stores.audit.pending import MAX_WAITING, PendingRecord
from consent.stores.audit.stats import WriteCounter
from consent.stores.audit.writes import write_group
from consent.stores.bounds import (
    DECISION_PSYCOPG_CONNECT_TIMEOUT_S,
    DECISION_SERVER_BOUNDS,
    bounded_engine,
)
from consent.stores.breaker import Breaker, StoreNotAnswering

#: How long a new leader yields to callers about to join its group (see GroupCommit._gather).
GATHER_SECONDS = 0.001


class GroupCommit:
    """The threads' writer of one audit log."""

    def __init__(
        self,
        engine: Engine,
        function: AppendFunction,
        counter: WriteCounter,
        *,
        max_batch: int,
        lock_timeout_seconds: float,
    ) -> None:
        self.engine = engine
        self.function = function
        self.counter = counter
        self.max_batch = max_batch
        self.lock_timeout_seconds = lock_timeout_seconds
        self._mutex = threading.Lock()
        self._queue: deque[PendingRecord] = deque()
        self._leading = False
        # Successive leaders write on one kept connection: checking one out of the pool costs a
        # ping and a round trip per group, a noticeable share of a group's time on PostgreSQL.
        self._connection: Connection | None = None
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # On PostgreSQL the leaders' kept connection has the decision path's bounds, as the
        # event loop's writer has: a caller of ``append`` is a decision waiting to be answered.
        self._leader_engine: Engine | None = None
        self.breaker = Breaker("the audit log")
        self._trips = 0  # the times it was tripped: a record admitted before a trip is failed

    def append(self, request: PendingRecord) -> Appended:
        """Write ``request`` in the next group and return once it is committed."""
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

    def _admit(self) -> None:
        """Raise ``AuditWriteFailed`` at once while the breaker refuses (see ``Breaker``)."""
        try:
            self.breaker.admit()
        except StoreNotAnswering as error:
            raise AuditWriteFailed(str(error)) from error

    def _lead(self) -> None:
        """Write the oldest waiting records as one group, release their callers, and hand the
        lead to the next waiting caller (if any), so no thread has to stay behind as writer."""
        self._gather()
        with self._mutex:
            group = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        outcomes = failures(len(group), "the audit writer stopped before committing")
        try:
            # Those admitted before the last trip waited behind a group that found the database
            # not answering: they fail at once rather than wait out the bounds in their turn.
            trips = self._trips
            fresh = [r for r in group if r.trips == trips]
            written = iter(self.write(fresh, serialise=True, atomic=False, reuse=True))
            refused = failures(len(group), "the audit log did not answer; not trying again yet")
            outcomes = [
                next(written) if r.trips == trips else failed
                for r, failed in zip(group, refused, strict=True)
            ]
        finally:
            for request, outcome in zip(group, outcomes, strict=True):
                request.settle(outcome)
            self.counter.count(sum(isinstance(o, Appended) for o in outcomes))
            with self._mutex:
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
        Larger groups cost less CPU per record; a lone caller loses only the yield."""
        deadline = time.perf_counter() + GATHER_SECONDS
        waiting = len(self._queue)
        while waiting < self.max_batch and time.perf_counter() < deadline:
            time.sleep(0)  # releases the GIL to any thread ready to run
            if len(self._queue) == waiting:
                return
            waiting = len(self._queue)

    def write(
        self,
        requests: Sequence[PendingRecord],
        *,
        serialise: bool,
        atomic: bool,
        reuse: bool = False,
    ) -> list[Outcome]:
        """Commit ``requests`` in one transaction; an outcome per request, never an Appended
        for a record that was not committed. Not ``atomic``, a record that repeats a logged
        decision fails alone and the others are written without it. Not ``serialise``d, without
        the chain's lock (the benchmark's baseline). With ``reuse`` (only the leader, one at a
        time), on the kept connection."""
        if not requests:
            return []
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                committed: list[Outcome] = list(
                    self._commit(requests, serialise=serialise, reuse=reuse)
                )
            except SQLAlchemyError as error:
                if not_answering(error):
                    self.breaker.failed()
                    self._trips += 1
                then = after_failure(error, len(requests), atomic=atomic, serialise=serialise)
            else:
                self.breaker.succeeded()
                return committed
            if then == "retry":
                continue
            if then == "alone":
                return [
                    o
                    for r in requests
                    for o in self.write([r], serialise=serialise, atomic=False, reuse=reuse)
                ]
            return then
        return failures(len(requests), CONTENDED)

    def _commit(
        self, requests: Sequence[PendingRecord], *, serialise: bool, reuse: bool = False
    ) -> list[Appended]:
        """One transaction: take the chain's lock, read the head once, insert, commit. With
        ``reuse``, on the kept connection; any failure discards it, so the next group starts on
        a fresh one."""
        server_side = serialise and self.function.check()
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

    def _commit_on(
        self,
        connection: Connection,
        requests: Sequence[PendingRecord],
        serialise: bool,
        server_side: bool,
    ) -> list[Appended]:
        if server_side:
            return self.function.call(connection, requests)
        return write_group(
            connection,
            requests,
            serialise=serialise,
            lock_timeout_seconds=self.lock_timeout_seconds,
        )

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

    def close(self) -> None:
        """Give back the kept connection (it is opened again when needed)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closed outright, not handed back: the pool may already be disposed of.
            connection.invalidate()
            connection.close()

    def dispose(self) -> None:
        """Close the kept connection and the leaders' engine (their engine was disposed of)."""
        self.close()
        engine, self._leader_engine = self._leader_engine, None
        if engine is not None:
            engine.dispose()
