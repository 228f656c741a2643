"""Group commit on an event loop (the API), without threads: the callers' records wait in a queue;
one task writes whatever is waiting in one call of the append function on an asyncpg connection
of the loop, settles each caller's future, and goes on while records keep coming. Records
appended while a group is being written wait for the next group, written as soon as that one
commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.exc import SQLAlchemyError

from consent.rules.chain import Appended
from consent.stores.audit.append_function import APPEND_ASYNC, AppendFunction, appended, arguments
from consent.stores.audit.failures import (
    CONTENDED,
    MAX_APPEND_ATTEMPTS,
    AuditWriteFailed,
    Outcome,
    after_failure,
    ended_by_server,
    failures,
    from_driver,
    stalled,
)
from consent.stores.audit.pending import MAX_WAITING, PendingRecord
from consent.stores.audit.stats import WriteCounter
from consent.stores.breaker import Breaker, StoreNotAnswering, close_or_drop


class AsyncWriter:
    """The writer of one audit log on one event loop."""

    def __init__(
        self,
        function: AppendFunction,
        connect_args: dict[str, Any],
        counter: WriteCounter,
        *,
        max_batch: int,
    ) -> None:
        self.function = function
        self.connect_args = connect_args
        self.counter = counter
        self.max_batch = max_batch
        self.queue: deque[tuple[PendingRecord, asyncio.Future[Appended]]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.connection: asyncpg.Connection | None = None
        # A group that timed out or lost its connection trips it: the records waiting behind
        # it, and new ones, fail at once instead of each waiting for a stalled database.
        self.breaker = Breaker("the audit log")

    async def append(self, request: PendingRecord) -> Appended:
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
                group = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
                requests = [request for request, _ in group]
                outcomes = failures(len(requests), "the audit writer stopped before committing")
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
                    self.counter.count(sum(isinstance(o, Appended) for o in outcomes))
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

    async def _write(self, requests: Sequence[PendingRecord]) -> list[Outcome]:
        """``GroupCommit.write`` for one group, awaiting the database instead of blocking."""
        for _ in range(MAX_APPEND_ATTEMPTS):
            try:
                return list(await self._commit(requests))
            except SQLAlchemyError as error:
                then = after_failure(error, len(requests), atomic=False, serialise=True)
            if then == "retry":
                continue
            if then == "alone":
                return [o for r in requests for o in await self._write([r])]
            return then
        return failures(len(requests), CONTENDED)

    async def _commit(self, requests: Sequence[PendingRecord]) -> list[Appended]:
        call = arguments(requests, self.function.lock_timeout_seconds)
        opened = False
        try:
            if self.connection is None or self.connection.is_closed():
                opened = True
                self.connection = await asyncpg.connect(**self.connect_args)
            rows = await self.function.fetch(self.connection, call)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            # A kept connection the server ended (a restart, an administrator) fails its group,
            # whose commit cannot be known, but says nothing of the server now: the next group
            # opens a new connection, and that connection's answer or stall decides. Whether
            # the ending arrives as the server's message or as a closed socket is a race.
            if stalled(error) and (opened or not ended_by_server(error)):
                self.breaker.failed()
            self.abandon()  # its state is unknown: the next group opens a new one
            raise from_driver(error, APPEND_ASYNC) from error
        except BaseException:
            self.abandon()
            raise
        self.breaker.succeeded()
        return appended(call, [tuple(row) for row in rows], requests)

    def abandon(self) -> None:
        """Drop the connection at once, without the goodbye a failed one may never answer."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await close_or_drop(connection)
