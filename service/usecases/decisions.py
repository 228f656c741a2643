"""Deciding for one customer: consent, features, scores, the gate, arbitration, the audit record.

The order is the safe one: consent, the customer's facts and contact history are read first (if
they cannot be read, nothing is delivered); models run only with profiling consent, and features
are read only for a purpose the customer agreed to (profiling, or service on this channel for
service actions' triggers); every candidate passes every rule; the decision is appended to the
audit log before it is returned.

``decide`` does this in the caller's thread, ``decide_async`` on the caller's event loop (the
API on PostgreSQL and Redis): the same steps in the same order, the I/O awaited. Both make the
decision itself in ``_decide``, from what was read.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from consent.rules.arbitration import arbitrate
from consent.rules.catalog import Catalog
from consent.rules.chain import Appended, mentions
from consent.rules.model import (
    Action,
    Candidate,
    ConsentGiven,
    DecisionRecord,
    FeaturesRead,
    GateInputs,
    ModelUsed,
)
from consent.rules.policy import Policy
from consent.rules.subject import Subject
from consent.rules.vocabulary import ANY_CHANNEL, NEEDS
from consent.stores.breaker import StoreNotAnswering
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory
from consent.stores.reads import GateRead, GateReads
from consent.stores.registry import ConsentRegistry
from feature_repo.definitions import SCORING_FEATURES, VIEW_OF
from feature_repo.explain import describe
from service import __version__
from service.adapters.features.online_features import OnlineFeatures, feature_age
from service.errors import AuditUnavailable, ConsentUnavailable, InvalidRequest
from service.usecases.ports import (
    ConsentReads,
    DecisionLog,
    OnlineFeatureReads,
    Scorer,
    ServedModels,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: How many of a score's strongest positive contributions are reported as its reasons.
TOP_REASONS = 3


#: The audit log replaces this with the customer's pseudonym; the raw id is never written.
PENDING_REF = "pending"
#: The one reason given for a customer the directory does not know: nothing is delivered, and
#: the record holds no facts, consents, features or scores, since there are none to rely on.
CUSTOMER_UNKNOWN: Final = "CUSTOMER_UNKNOWN"


def _granted(consents: Mapping[tuple[str, str], ConsentGiven], purpose: str, channel: str) -> bool:
    entry = consents.get((purpose, channel))
    return entry is not None and entry.granted


def _reasons(
    needs: Sequence[str | None],
    scores: Mapping[str, float],
    models: Mapping[str, Scorer],
    rows: Mapping[tuple[str, ...], np.ndarray],
    values: Mapping[str, float | None],
) -> dict[str, tuple[Reason, ...]]:
    """The reasons of the delivered needs that were scored: their models' strongest positive
    contributions. Only for what is delivered: a contribution costs several times a score."""
    reasons: dict[str, tuple[Reason, ...]] = {}
    for need in needs:
        if need is None or need not in scores or need in reasons:
            continue
        model = models[need]
        contributions = model.contributions(rows[model.features])
        reasons[need] = tuple(
            Reason(name, values.get(name), c) for name, c in contributions[:TOP_REASONS] if c > 0
        )
    return reasons


#: Each feature view's features, in the order decisions record them.
VIEW_FEATURES: dict[str, tuple[str, ...]] = {}
for _name in SCORING_FEATURES:
    VIEW_FEATURES[VIEW_OF[_name]] = (*VIEW_FEATURES.get(VIEW_OF[_name], ()), _name)


@dataclass(frozen=True)
class DecideForCustomer:
    customer_id: str
    channel: str
    limit: int = 3
    context: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    #: Only these actions are candidates (an alert's trigger concerns only them); None: all.
    actions: frozenset[str] | None = None


@dataclass(frozen=True)
class Reason:
    feature: str
    value: float | None
    contribution: float

    @property
    def text(self) -> str:
        """The reason in words ("loan calculator views, last 7 days: 5")."""
        return describe(self.feature, self.value)


@dataclass(frozen=True)
class Scored:
    """A customer's online features as a decision uses them, and what the models made of them.

    The alerter scores a customer this way to see whether an alert is due; the decision that
    alert carries reuses it (``Seen``), so the features are read and the models run once."""

    online: OnlineFeatures | None
    #: Whether the models were allowed to run (profiling consent, as read then).
    profiled: bool
    #: The values with stale features served as missing, and the stale features' names.
    values: dict[str, float | None]
    stale: frozenset[str]
    #: One consistent set of models, whatever a refresh does meanwhile.
    models: Mapping[str, Scorer]
    scores: dict[str, float]
    #: The rows the models scored, by their features (models on the same features share one).
    rows: dict[tuple[str, ...], np.ndarray]

    def fits(self, online: OnlineFeatures | None, profiled: bool) -> bool:
        """Whether these are the scores a decision reading ``online`` with ``profiled`` makes."""
        return self.online is online and self.profiled == profiled


@dataclass(frozen=True)
class Seen:
    """A customer as read for a decision before the decision is asked for: the gate's read as
    of ``at``, and their features as read and scored (``Scored``)."""

    at: datetime
    read: GateRead
    scored: Scored


@dataclass(frozen=True)
class DecisionMade:
    customer_id: str
    record: DecisionRecord
    audit: Appended
    reasons: dict[str, tuple[Reason, ...]]


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
            if self._may_read_features(read, command):
                online = scored.online
        else:
            read = self.read_gate(command.customer_id, now)
            if self._may_read_features(read, command):
                try:
                    online = self.features.read(command.customer_id)
                except Exception as error:
                    fallback = self._without_features(error)
        record, reasons = self._decide(command, now, read, online, fallback, scored)
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

    def see(self, customer_id: str, scored: Scored) -> Seen:
        """The gate's read of ``customer_id`` now, with their features as read and scored
        moments ago (``score``): what ``decide`` needs to decide without reading them again."""
        now = datetime.now(UTC)
        return Seen(now, self.read_gate(customer_id, now), scored)

    def score(self, online: OnlineFeatures | None, now: datetime, profiled: bool) -> Scored:
        """What the models make of ``online`` as of ``now``; they run only if ``profiled``."""
        # Stale features are served as missing; the gate withholds what depends on them.
        raw = online.values if online is not None and online.known else {}
        values, stale = online.fresh(now) if online is not None and raw else ({}, frozenset())
        # One consistent set of models for the whole decision, whatever a refresh does meanwhile.
        models = self.models.snapshot()
        scores: dict[str, float] = {}
        rows: dict[tuple[str, ...], np.ndarray] = {}  # models on the same features share a row
        if profiled and values:
            for need, model in models.items():
                row = rows.get(model.features)
                if row is None:
                    row = rows[model.features] = model.row(values)
                scores[need] = model.probability(row)
        return Scored(online, profiled, values, stale, models, scores, rows)

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
        if self._may_read_features(read, command):
            try:
                online = await self.features.read_async(command.customer_id)
            except Exception as error:
                fallback = self._without_features(error)
        record, reasons = self._decide(command, now, read, online, fallback)
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

    @staticmethod
    def _check(command: DecideForCustomer) -> datetime:
        if mentions(json.dumps(command.context), command.customer_id):
            # It would be written to the audit log in clear and outlive an erasure.
            raise InvalidRequest("the context must not carry the customer id")
        return datetime.now(UTC)

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

    @staticmethod
    def _may_read_features(read: GateRead, command: DecideForCustomer) -> bool:
        """Features are read only for a known customer and a purpose they agreed to: profiling,
        or service on this channel (for service actions' triggers)."""
        return read.known is not None and (
            _granted(read.consents, "profiling", ANY_CHANNEL)
            or _granted(read.consents, "service", command.channel)
        )

    def _decide(
        self,
        command: DecideForCustomer,
        now: datetime,
        read: GateRead,
        online: OnlineFeatures | None,
        fallback: str | None,
        scored: Scored | None = None,
    ) -> tuple[DecisionRecord, dict[str, tuple[Reason, ...]]]:
        """The decision from what was read: scores (``scored`` if they fit what was read),
        candidates through the gate, arbitration, reasons for what is delivered, and the
        record (not yet logged)."""
        consents, known, contacts = read.consents, read.known, read.contacts
        if known is None:
            # Not a customer of the bank's directory: one clear outcome, nothing made up.
            return self._record(
                command,
                now,
                reason_codes=(CUSTOMER_UNKNOWN,),
                delivery_status="withheld",
                gate=GateInputs(facts=None, limit=command.limit, depends_on={}),
            ), {}
        may_profile = _granted(consents, "profiling", ANY_CHANNEL)
        if scored is None or not scored.fits(online, may_profile):
            scored = self.score(online, now, may_profile)
        raw = online.values if online is not None and online.known else {}
        values, stale, models = scored.values, scored.stale, scored.models
        scores, rows = scored.scores, scored.rows

        in_flight = frozenset(n for n in NEEDS if (values.get(f"in_flight_{n}") or 0) > 0)
        facts = known.facts if known else None
        page = command.context.get("page")
        served = frozenset(models)
        candidates = []
        memo: dict[Any, Any] = {}  # what the rules work out once per decision
        depended: dict[str, frozenset[str]] = {}  # kept for replays (``GateInputs``)
        relevant_stale: set[str] = set()
        for action in self.catalog.actions.values():
            if not _offered(action, command, raw):
                continue
            score = scores.get(action.need) if action.need else None
            if action.need is not None and action.need in models:
                depends_on = depended[action.need] = models[action.need].depends_on
            else:
                depends_on = frozenset(c.feature for c in action.when)
            relevant_stale.update(depends_on & stale)
            outcomes = self.policy.evaluate(
                Subject(
                    action=action,
                    channel=command.channel,
                    score=score,
                    consents=consents,
                    now=now,
                    facts=facts,
                    contacts=contacts,
                    in_flight=in_flight,
                    stale=stale,
                    depends_on=depends_on,
                    models_served=served,
                    memo=memo,
                )
            )
            propensity = 1.0 if score is None else score
            context_weight = action.context.get(page, 1.0) if page else 1.0
            candidates.append(
                Candidate.model_construct(  # built from the catalog and the gate: valid as is
                    action_id=action.id,
                    need=action.need,
                    kind=action.kind,
                    score=score,
                    value=action.value,
                    priority=round(propensity * action.value * context_weight * action.lever, 6),
                    rules=outcomes,
                    delivered=False,
                    propensity=round(propensity, 6),
                    context_weight=context_weight,
                    lever=action.lever,
                )
            )
        delivered_ids = arbitrate(candidates, command.limit)
        delivered_needs = [c.need for c in candidates if c.action_id in delivered_ids]
        reasons = _reasons(delivered_needs, scores, models, rows, values)
        candidates = [  # built undelivered: only the delivered ones change
            c.model_copy(update={"delivered": True}) if c.action_id in delivered_ids else c
            for c in candidates
        ]
        record = self._record(
            command,
            now,
            candidates=tuple(candidates),
            delivered=tuple(delivered_ids),
            consents_relied_on=self.relied_on(consents, command.channel),
            features=self._feature_reads(online, now),
            models=tuple(
                ModelUsed(need=m.need, name=m.name, version=m.version, run_id=m.run_id)  # type: ignore[arg-type]
                for m in models.values()
                if m.need in scores
            ),
            fallback=fallback,
            reason_codes=tuple(
                sorted({code for c in candidates if not c.delivered for code in c.suppressed_by})
            ),
            delivery_status="delivered" if delivered_ids else "nothing_to_deliver",
            rule_versions={rule.id: rule.version for rule in self.policy.rules},
            gate=GateInputs(
                facts=facts,
                contacts=contacts,
                in_flight=tuple(sorted(in_flight)),
                limit=command.limit,
                models_served=tuple(sorted(served)),
                depends_on={need: tuple(sorted(names)) for need, names in depended.items()},
                stale=tuple(sorted(relevant_stale)),
            ),
        )
        return record, reasons

    def _record(self, command: DecideForCustomer, now: datetime, **fields: Any) -> DecisionRecord:
        """The decision record: what every record says, and ``fields`` (what was decided)."""
        nothing: dict[str, Any] = {
            "candidates": (),
            "delivered": (),
            "consents_relied_on": (),
            "features": (),
            "models": (),
            "fallback": None,
        }
        return DecisionRecord(
            decision_id=str(uuid.uuid4()),
            decided_at=now,
            trigger=command.trigger or {"kind": "api_request", "context": command.context},
            customer_ref=PENDING_REF,
            channel=command.channel,
            policy_version=self.policy.version,
            code_version=__version__,
            **{**nothing, **fields},
        )

    @staticmethod
    def relied_on(
        consents: dict[tuple[str, str], ConsentGiven], channel: str
    ) -> tuple[ConsentGiven, ...]:
        """The consent records a decision on ``channel`` relies on, as its record keeps them."""
        keys = [(p, channel) for p in ("marketing", "service")] + [("profiling", ANY_CHANNEL)]
        return tuple(consents[k] for k in keys if k in consents)

    @staticmethod
    def _feature_reads(online: OnlineFeatures | None, now: datetime) -> tuple[FeaturesRead, ...]:
        """Every feature read, by feature view: the time of the view's row, its age, values."""
        if online is None or online.as_of is None:
            return ()
        reads = []
        for view, names in VIEW_FEATURES.items():
            as_of = online.as_of_by_view.get(view)
            reads.append(
                FeaturesRead.model_construct(  # ours, already the right types
                    as_of=as_of,
                    age_seconds=None if as_of is None else round(feature_age(as_of, now), 3),
                    values={n: online.values[n] for n in names if n in online.values},
                )
            )
        return tuple(reads)


def _offered(action: Action, command: DecideForCustomer, raw: dict[str, Any]) -> bool:
    """Whether ``action`` is a candidate at all: enabled, on this channel, asked for, and its
    trigger holding. A trigger is judged on what is stored; if that is stale, the gate says so."""
    if not action.enabled or command.channel not in action.channels:
        return False
    if command.actions is not None and action.id not in command.actions:
        return False
    return not action.when or all(c.holds(raw) for c in action.when)
