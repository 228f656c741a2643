"""Deciding for one customer: consent, features, scores, the gate, arbitration, the audit record.

The order is the safe one: consent, the customer's facts and contact history are read first (if
they cannot be read, nothing is delivered); models run only with profiling consent, and features
are read only for a purpose the customer agreed to (profiling, or service on this channel for
service actions' triggers); every candidate passes every rule; the decision is appended to the
audit log before it is returned.

``decide`` does this in the caller's thread, ``decide_async`` on the caller's event loop (the
API on PostgreSQL and Redis): the same steps in the same order, the I/O awaited. Both make the
decision itself with ``service.usecases.decision_making.DecisionMaker``, from what was read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from consent.rules.catalog import Catalog
from consent.rules.chain import mentions
from consent.rules.policy import Policy
from consent.stores.breaker import StoreNotAnswering
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory
from consent.stores.reads import GateRead, GateReads
from consent.stores.registry import ConsentRegistry
from service.adapters.features.online_features import OnlineFeatures
from service.errors import AuditUnavailable, ConsentUnavailable, InvalidRequest
from service.usecases.decision_consent import may_read_features
from service.usecases.decision_making import DecisionMaker
from service.usecases.decision_messages import (
    DecideForCustomer,
    DecisionMade,
    Scored,
    Seen,
)
from service.usecases.decision_scores import score_features, score_many
from service.usecases.ports import (
    ConsentReads,
    DecisionLog,
    OnlineFeatureReads,
    ServedModels,
)

log = logging.getLogger(__name__)


class DecisionService:
    def __init__(
        self,
        registry: ConsentRegistry,
        directory: CustomerDirectory,
        contacts: ContactHistory,
        features: OnlineFeatureReads,
        models: ServedModels,
        catalog: Catalog,
        policy: Policy,
        audit: DecisionLog,
        reads: ConsentReads | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.registry = registry
        self.directory = directory
        self.contacts = contacts
        self.reads: ConsentReads = reads or GateReads(registry, directory, contacts)
        self.features = features
        self.models = models
        self.catalog = catalog
        self.policy = policy
        self.audit = audit
        #: Now, for every decision (the wall clock unless a simulation runs the bank forward).
        self.clock = clock

    @property
    def asynchronous(self) -> bool:
        """Whether ``decide_async`` decides without a thread: the gate's and the features'
        reads have asynchronous forms (PostgreSQL, Redis). The audit log always has one."""
        return self.reads.asynchronous and self.features.asynchronous

    def decide(self, command: DecideForCustomer, seen: Seen | None = None) -> DecisionMade:
        """The decision for ``command``, logged. With ``seen`` (``see``), it is made from that
        read and those scores rather than reading and scoring again; the gate's read in it
        still says whether the features and scores may be used."""
        now = self._check(command)
        online, fallback, scored = None, None, None
        if seen is not None:
            now, read, scored = seen.at, seen.read, seen.scored
            if may_read_features(read, command.channel):
                online = scored.online
        else:
            read = self.read_gate(command.customer_id, now)
            if may_read_features(read, command.channel):
                try:
                    online = self.features.read(command.customer_id)
                except Exception as error:
                    fallback = self._without_features(error)
        record, reasons = self._maker.decide(command, now, read, online, fallback, scored)
        try:
            appended = self.audit.append(record, customer_id=command.customer_id)
        except Exception as error:
            raise self._audit_unavailable(error) from error
        return DecisionMade(command.customer_id, record, appended, reasons)

    def read_gate(self, customer_id: str, now: datetime) -> GateRead:
        """The gate's inputs for ``customer_id`` as of ``now``: ``ConsentUnavailable`` if they
        cannot be read (any failure to read consent means no delivery)."""
        try:
            return self.reads.read(customer_id, now, self.policy.max_contact_lookback_days)
        except Exception as error:
            raise self._consent_unavailable(error) from error

    def read_gates(self, customer_ids: Iterable[str], now: datetime) -> dict[str, GateRead]:
        """``read_gate`` of each of ``customer_ids``, in a few queries (batch work):
        ``ConsentUnavailable`` if any cannot be read."""
        try:
            return self.reads.read_many(customer_ids, now, self.policy.max_contact_lookback_days)
        except Exception as error:
            raise self._consent_unavailable(error) from error

    def see(self, customer_id: str, scored: Scored) -> Seen:
        """The gate's read of ``customer_id`` now, with their features as read and scored
        moments ago (``score``): what ``decide`` needs to decide without reading them again."""
        now = self.clock()
        return Seen(now, self.read_gate(customer_id, now), scored)

    def score(self, online: OnlineFeatures | None, now: datetime, profiled: bool) -> Scored:
        """What the models served now make of ``online`` as of ``now``; they run only if
        ``profiled``."""
        return score_features(self.models.snapshot(), online, now, profiled)

    def score_many(
        self, onlines: Sequence[OnlineFeatures | None], now: datetime, profiled: Sequence[bool]
    ) -> list[Scored]:
        """``score`` of each of ``onlines`` (with its ``profiled``), by one set of models, each
        run once over all of them (batch work)."""
        return score_many(self.models.snapshot(), onlines, now, profiled)

    async def decide_async(self, command: DecideForCustomer) -> DecisionMade:
        """``decide`` on the running event loop (see ``asynchronous``): the same reads, rules
        and record, the I/O awaited rather than blocking a thread."""
        now = self._check(command)
        try:
            read = await self.reads.read_async(
                command.customer_id, now, self.policy.max_contact_lookback_days
            )
        except Exception as error:
            raise self._consent_unavailable(error) from error
        online, fallback = None, None
        if may_read_features(read, command.channel):
            try:
                online = await self.features.read_async(command.customer_id)
            except Exception as error:
                fallback = self._without_features(error)
        record, reasons = self._maker.decide(command, now, read, online, fallback)
        try:
            appended = await self.audit.append_async(record, customer_id=command.customer_id)
        except Exception as error:
            raise self._audit_unavailable(error) from error
        return DecisionMade(command.customer_id, record, appended, reasons)

    async def close_async(self) -> None:
        """Close what the asynchronous path opened on the running event loop."""
        await self.reads.close_async()
        await self.features.close_async()
        await self.audit.close_async()

    @property
    def _maker(self) -> DecisionMaker:
        return DecisionMaker(self.catalog, self.policy, self.models)

    def _check(self, command: DecideForCustomer) -> datetime:
        if mentions(json.dumps(command.context), command.customer_id):
            # It would be written to the audit log in clear and outlive an erasure.
            raise InvalidRequest("the context must not carry the customer id")
        return self.clock()

    @staticmethod
    def _consent_unavailable(error: Exception) -> ConsentUnavailable:
        # The failure that tripped the breaker was logged; each decision it then refuses is
        # not (hundreds a second during an outage would drown the log).
        if isinstance(error, StoreNotAnswering):
            log.debug("operational store read refused: %s", error)
        else:
            log.error("operational store read failed: %s: %s", type(error).__name__, error)
        return ConsentUnavailable()

    @staticmethod
    def _audit_unavailable(error: Exception) -> AuditUnavailable:
        log.error("audit append failed: %s", error)
        return AuditUnavailable()

    @staticmethod
    def _without_features(error: Exception) -> str:
        log.warning("online store read failed, deciding without features: %s", error)
        return "online_store_unavailable"
