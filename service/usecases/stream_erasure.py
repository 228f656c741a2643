"""Erased customers on the stream: their events are dropped (and counted by the worker), never
dead-lettered, since a letter would keep their data; and what a batch wrote of a customer erased
while it ran is undone."""

from __future__ import annotations

import logging

from consent.stores.erasure import Erased, ErasureRegister, candidate_ids
from consent.stores.outcomes import OutcomeEvents
from consent.stores.registry import ConsentRegistry
from service.adapters.erasure_purge import overwritten
from service.adapters.features.offline import OfflineBuffer
from service.adapters.features.writers import OnlineWriter
from service.adapters.state import StateStore
from service.adapters.transport import Record
from service.usecases.stream_validation import Parsed

log = logging.getLogger(__name__)


class ErasedOnStream:
    """The erasure register as the stream sees it, batch by batch (no register: nobody is
    erased)."""

    def __init__(self, erasures: ErasureRegister | None = None) -> None:
        self.erasures = erasures
        self.written: set[str] = set()  # customers the current batch writes
        self.at_start = Erased(b"", frozenset())  # the register as the batch began

    def current(self) -> Erased:
        """The erasure register now (read before a batch and again after its writes)."""
        return self.erasures.current() if self.erasures is not None else Erased(b"", frozenset())

    def begin_batch(self) -> None:
        self.at_start = self.current()

    def names_erased(self, record: Record) -> bool:
        """Whether a record about to be dead-lettered belongs to an erased customer, by its key (the
        contract's customer id) or a ``customer_id`` in its text, or is one of theirs that an
        erasure overwrote in the local log: then it is dropped, so a replay does not
        dead-letter their data (or the marker) again."""
        if overwritten(record.value):
            return True
        erased = self.at_start
        return bool(erased) and bool(erased.among(candidate_ids(record.key, record.value)))

    def without_erased(self, parsed: list[Parsed]) -> list[Parsed]:
        """``parsed`` without the events (consent events too) of erased customers, whatever
        their record's key: a replay from any offset never brings them back."""
        self.written = {p.event.customer_id for p in parsed}
        gone = self.at_start.among(self.written)
        if not gone:
            return parsed
        self.written -= gone
        return [p for p in parsed if p.event.customer_id not in gone]

    def undo_erased_meanwhile(
        self,
        online: OnlineWriter,
        states: StateStore,
        offline: OfflineBuffer,
        consents: ConsentRegistry | None,
    ) -> None:
        """An erasure committed while this batch was written: undo what the batch wrote of
        that customer (the erasure deleted what was there before; it cannot see this)."""
        now = self.current()
        if now is self.at_start or not self.written:
            return
        gone = now.among(self.written)
        for customer in gone:
            online.erase(customer)
            states.delete(customer)
        if gone:
            offline.drop(gone)
            if consents is not None:
                with consents.engine.begin() as connection:
                    for customer in gone:
                        ConsentRegistry.erase(connection, customer)
                        OutcomeEvents.erase(connection, customer)  # the same store
            log.info("undid a batch's writes for %d customer(s) erased meanwhile", len(gone))
