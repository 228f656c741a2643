"""The append-only, hash-chained audit log: one record per decision, kept like a payments ledger,
and one per operation on many customers at once (``append_operation``: a batch scoring run, an
erasure), which names no customer. The chain's format is ``consent/rules/chain.py``.

``append`` returns only once the record's transaction has committed; concurrent appends share
transactions (``group_commit.py`` in threads, ``async_writer.py`` on an event loop).
``append_many`` writes a producer's batch in one transaction, all or nothing.

**Pseudonyms.** The log names a customer only by pseudonym, under a random per-customer key
(``customer_keys``) created on the customer's first record. Deleting the key (``forget``, the
right to erasure) leaves every record and the chain intact, but nothing ties those records to
the customer any more; a customer who comes back gets a new key.

**Checkpoints.** ``checkpoint()`` stores the head of the chain (and can be handed to an outside
party as JSON); ``verify`` checks the stored checkpoints and any given one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from consent.rules.chain import Appended, Checkpoint, Verification
from consent.rules.record import DecisionRecord, OperationRecord
from consent.rules.signed_heads import Head
from consent.stores.audit import reads
from consent.stores.audit.append_function import AppendFunction
from consent.stores.audit.async_writer import AsyncWriter
from consent.stores.audit.checkpointer import Checkpointer
from consent.stores.audit.failures import (
    CONTENDED,
    MAX_APPEND_ATTEMPTS,
    AuditWriteFailed,
    DuplicateDecision,
    cause_of,
)
from consent.stores.audit.group_commit import GroupCommit
from consent.stores.audit.pending import MAX_BATCH, PendingRecord
from consent.stores.audit.stats import WriteCounter, WriterStats
from consent.stores.audit.writes import (
    LOCK_TIMEOUT_SECONDS,
    append_operation_in,
    erase_customer_key,
)
from consent.stores.bounds import asyncpg_connect_args
from consent.stores.breaker import Breaker


class AuditLog:
    """The audit log on the operational store (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = MAX_BATCH,
        lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.lock_timeout_seconds = lock_timeout_seconds
        #: Publishes signed checkpoints of what this process writes (none: not signed here).
        self.checkpointer = checkpointer
        self._counter = WriteCounter()
        if checkpointer is not None:
            self._counter.listeners.append(checkpointer.written)
        self._function = AppendFunction(engine, lock_timeout_seconds)
        #: The threads' writer (group commit).
        self.writer = GroupCommit(
            engine,
            self._function,
            self._counter,
            max_batch=max_batch,
            lock_timeout_seconds=lock_timeout_seconds,
        )
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncWriter] = (
            weakref.WeakKeyDictionary()
        )
        event.listen(engine, "engine_disposed", lambda _: self.writer.dispose())

    @property
    def breaker(self) -> Breaker:
        """The threads' writer's breaker: tripped by a group that found the database not
        answering, so the groups behind it and new callers fail at once."""
        return self.writer.breaker

    @property
    def stats(self) -> WriterStats:
        return self._counter.stats

    # --- writing ---

    def append(self, record: DecisionRecord, customer_id: str | None = None) -> Appended:
        """Write ``record`` for ``customer_id`` (by default the record's ``customer_ref``, taken
        as the customer's id) and commit before returning. The stored record names the customer
        by pseudonym, in ``customer_ref`` and in the consents relied on.

        Raises ``ValueError`` if the record would carry the customer's id anywhere else,
        ``DuplicateDecision`` if its decision is already logged, ``AuditWriteFailed`` if it
        could not be committed.
        """
        return self.writer.append(PendingRecord.of(record, customer_id))

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
        requests = [PendingRecord.of(r, c) for r, c in zip(records, ids, strict=True)]
        if not requests:
            return []
        outcomes = self.writer.write(requests, serialise=True, atomic=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        self._counter.count(len(outcomes))
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
                cause = cause_of(error)
                raise AuditWriteFailed(f"the audit log could not be written: {cause}") from error
            self._counter.count(1)
            return appended
        raise AuditWriteFailed(CONTENDED)

    def forget(self, customer_id: str) -> bool:
        """Erase the customer from the log (their key); whether they had one. To erase them
        together with other data, call ``erase_customer_key`` in that transaction."""
        with self.engine.begin() as connection:
            return erase_customer_key(connection, customer_id)

    def written(self, records: int) -> None:
        """``records`` were appended in a caller's own transaction (``append_operation_in``),
        now committed: counted like the log's own, so a checkpoint covers them."""
        self._counter.count(records)

    def close(self) -> None:
        """Give back the kept writer connection (it is opened again when needed), and publish
        a checkpoint of what this process wrote since the last one."""
        self.writer.close()
        if self.checkpointer is not None:
            self.checkpointer.close()

    # --- on an event loop (the API) ---

    async def append_async(
        self, record: DecisionRecord, customer_id: str | None = None
    ) -> Appended:
        """``append`` without a thread, for callers on an event loop: through the append
        function on PostgreSQL, on an asyncpg connection of the running loop (see
        ``AsyncWriter``); elsewhere ``append`` in a worker thread."""
        if self._function.usable is None:
            await asyncio.to_thread(self._function.check)  # made once, maybe DDL: off the loop
        if not self._function.usable:
            return await asyncio.to_thread(self.append, record, customer_id)
        request = PendingRecord.of(record, customer_id)
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            writer = self._writers[loop] = AsyncWriter(
                self._function,
                asyncpg_connect_args(self.engine),
                self._counter,
                max_batch=self.max_batch,
            )
        return await writer.append(request)

    def writer_on(self, loop: asyncio.AbstractEventLoop) -> AsyncWriter | None:
        """The writer of ``loop``, once a record was appended on it (and until
        ``close_async``)."""
        return self._writers.get(loop)

    async def close_async(self) -> None:
        """Close the running loop's writer connection."""
        writer = self._writers.pop(asyncio.get_running_loop(), None)
        if writer is not None:
            await writer.close()

    # --- reading and checking (``reads.py``) ---

    def get(self, decision_id: str) -> dict[str, Any] | None:
        return reads.get(self.engine, decision_id)

    def operations(self, operation: str) -> list[dict[str, Any]]:
        """The operation records of one kind (``OperationRecord.operation``), oldest first."""
        return reads.operations(self.engine, operation)

    def pseudonym_of(self, customer_id: str) -> str | None:
        """The customer's current pseudonym; None once erased (or before their first record)."""
        return reads.pseudonym_of(self.engine, customer_id)

    def export(
        self,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        with_body: bool = True,
        batch: int = reads.READ_BATCH,
    ) -> Iterator[dict[str, Any]]:
        """The records as JSON-able dicts (see ``reads.export``)."""
        return reads.export(
            self.engine, customer_id, since, until, with_body=with_body, batch=batch
        )

    def verify(
        self, checkpoint: Checkpoint | None = None, heads: Sequence[Head] = ()
    ) -> Verification:
        """Walk the whole chain, checking it against the stored checkpoints, ``checkpoint``
        and the signed ``heads`` (published outside: what proves that nothing they cover was
        changed, removed or cut off)."""
        return reads.verify(self.engine, checkpoint, heads)

    def checkpoint(self) -> Checkpoint:
        """Store and return the current head of the chain."""
        return reads.checkpoint(self.engine)

    def checkpoints(self) -> list[Checkpoint]:
        return reads.checkpoints(self.engine)
