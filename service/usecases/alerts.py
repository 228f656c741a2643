"""Proactive triggers and relationship-manager alerts.

The stream worker tells the ``Alerter`` which customers' features it just wrote. Events of one
customer within ``debounce_seconds`` cost one rescoring. Only customers with an RM are
rescored; their features are read only with profiling consent or service consent on the RM
channel, and scored only with profiling consent (as for decisions). An alert is considered when

- a need's calibrated score rises to its threshold (``consent/alerts.yaml``) from below, or
- a rule trigger (large inflow, salary change, idle cash, unusual card activity) comes to hold.

Before the gate, the alert discipline drops what would repeat an alert: one per customer ×
need (a service action is its own need) while one is open or queued, or within the window; a
household shares its sales needs. What is left goes through the same gate as API decisions,
with channel ``rm`` and only the actions the trigger concerns, so the decision is written to
the audit log first (and, when nothing passes, the log says why). Each delivered action becomes
an alert with talking points built from the reasons. It is stored, ``open`` while the RM has
capacity left today, ``queued`` otherwise (opened later, highest priority first), and expires if
not worked. New and changed alerts are published to ``nextbest.alerts.v1``.

An alert passes the gate again whenever it is about to reach the RM: when a queued one is
opened, when alerts are listed and when one is disposed (``service/usecases/regate.py``). One that
no longer passes is ``withdrawn``, with its reason, and the withdrawal is logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, text, update

from consent.rules.model import ANY_CHANNEL, Action, Condition, ContactKind
from consent.rules.policy import (
    Catalog,
    PolicyError,
    content_hash,
    explain_invalid,
    load_rules_yaml,
)
from consent.stores.contacts import ContactHistory, ContactMade
from consent.stores.customers import NEEDS, CustomerDirectory
from consent.stores.store import alerts as alerts_table
from consent.stores.store import consent_history
from consent.stores.store import customers as customers_table
from feature_repo.explain import describe
from service.adapters.metrics import send_failures
from service.adapters.state import StateStore
from service.adapters.transport import Producer
from service.entrypoints.auth import Role
from service.errors import Conflict, NotFound
from service.usecases.decisions import (
    DecideForCustomer,
    DecisionMade,
    DecisionService,
    FeatureReader,
)
from service.usecases.origin import Origin

if TYPE_CHECKING:
    from service.usecases.regate import AlertGate, Regated

log = logging.getLogger(__name__)

RM_CHANNEL = "rm"
Status = Literal["queued", "open", "closed", "expired", "withdrawn"]
STATUSES: tuple[Status, ...] = ("queued", "open", "closed", "expired", "withdrawn")
#: The statuses in which an alert is still to reach the RM or be worked: the gate is asked
#: again for these, and only these can be withdrawn.
ACTIONABLE: tuple[Status, ...] = ("queued", "open")
Outcome = Literal[
    "contacted", "converted", "not_interested", "not_suitable", "wrong_timing", "unreachable"
]
#: What a disposition tells contact history (None: no contact took place).
CONTACT_KIND: dict[str, ContactKind | None] = {
    "contacted": "contact",
    "converted": "accept",
    "not_interested": "decline",
    "not_suitable": "dismiss",
    "wrong_timing": "dismiss",
    "unreachable": None,
}
#: Training labels from dispositions: the customer took the product, or said no.
LABEL: dict[str, int] = {"converted": 1, "not_interested": 0}
TICK_S = 0.05
#: Alerts whose publication failed wait in memory for the next one (the sweep tries every
#: second); beyond this many the oldest are given up, logged and counted. Their state is in
#: the store either way: the inbox and the API show them; the topic is a feed.
UNPUBLISHED_LIMIT = 10_000


# --- configuration ------------------------------------------------------------------------
class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    when: tuple[Condition, ...] = Field(min_length=1)
    actions: tuple[str, ...] = Field(min_length=1)

    def holds(self, values: dict[str, float | None]) -> bool:
        return all(c.holds(values) for c in self.when)


class AlertPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    debounce_seconds: float = Field(ge=0, le=60)
    window_hours: float = Field(gt=0)
    expire_hours: float = Field(gt=0)
    rm_daily_capacity: int = Field(ge=1)
    limit: int = Field(ge=1, le=10)
    #: By need (each one of ``consent.rules.model.Need``).
    thresholds: dict[str, float]
    triggers: tuple[Trigger, ...] = ()
    #: Policy rules (ids) an open or queued alert must still pass when it reaches the RM.
    regate_rules: tuple[str, ...] = Field(min_length=1)
    content_version: str = ""

    @classmethod
    @field_validator("thresholds")
    @classmethod
    def _needs(cls, thresholds: dict[str, float]) -> dict[str, float]:
        unknown = set(thresholds) - set(NEEDS)
        if unknown:
            raise ValueError(f"unknown needs {sorted(unknown)}")
        return thresholds

    @classmethod
    def load(cls, catalog: Catalog, path: Path | None = None) -> AlertPolicy:
        document = load_rules_yaml(path, "alerts.yaml")
        try:
            policy = cls.model_validate({**document, "content_version": content_hash(document)})
        except ValidationError as error:
            raise PolicyError(f"invalid alert policy: {explain_invalid(error)}") from None
        for trigger in policy.triggers:
            for action_id in trigger.actions:
                action = catalog.actions.get(action_id)
                if action is None:
                    raise PolicyError(f"trigger {trigger.id}: unknown action {action_id!r}")
                if RM_CHANNEL not in action.channels:
                    raise PolicyError(f"trigger {trigger.id}: {action_id} is not for the RM")
        return policy


# --- alerts -------------------------------------------------------------------------------
class AlertReason(BaseModel):
    model_config = ConfigDict(frozen=True)
    feature: str
    value: float | None
    text: str


Notice = Literal["consent_withdrawn", "not_allowed"]
Moment = Literal["open", "list", "dispose"]
#: What a withdrawal says to those who may not read the rules' reasons.
NOTICE_TEXT: dict[Notice, str] = {
    "consent_withdrawn": "consent withdrawn",
    "not_allowed": "no longer allowed by the bank's rules",
}


class Withdrawal(BaseModel):
    """Why and when an alert stopped passing the gate, and the audit record that says so."""

    model_config = ConfigDict(frozen=True)

    at: AwareDatetime
    #: What the RM may know: consent was withdrawn, or another rule no longer allows it.
    notice: Notice
    text: str
    #: The failing rules' reason codes. Compliance only: they can tell an AML flag or a
    #: vulnerability, which the front line must not learn (as with a decision's suppressions).
    reason_codes: tuple[str, ...] = ()
    #: The audit record of the withdrawal; it corrects the alert's decision.
    decision_id: str
    #: When it was found: opening a queued alert, listing alerts, or a disposition.
    moment: Moment


#: Kept in the row's JSON body rather than in columns of their own.
_BODY = ("title", "kind", "triggers", "reasons", "talking_points", "origin", "withdrawal")


class Alert(BaseModel):
    """An RM alert: who, which need, why (reasons and talking points), and what became of it.
    The same shape is stored, published to ``nextbest.alerts.v1`` and returned by the API."""

    model_config = ConfigDict(frozen=True)

    alert_id: str
    decision_id: str
    customer_id: str
    household_id: str | None
    rm_id: str
    #: What one open alert per customer is kept to: the need, or a service action's id.
    topic: str
    need: str | None
    action_id: str
    title: str
    kind: str
    score: float | None
    priority: float
    status: Status
    created_at: AwareDatetime
    opened_at: AwareDatetime | None
    expires_at: AwareDatetime
    triggers: tuple[str, ...] = ()
    reasons: tuple[AlertReason, ...] = ()
    talking_points: tuple[str, ...] = ()
    #: The event that raised it, with its Kafka coordinates.
    origin: dict[str, Any] = Field(default_factory=dict)
    disposition: str | None = None
    disposition_note: str | None = None
    disposed_at: AwareDatetime | None = None
    disposed_by: str | None = None
    withdrawal: Withdrawal | None = None

    def redacted(self) -> Alert:
        """The alert as anyone but compliance sees it: a withdrawn alert keeps who, what and
        the notice, not the rules' reason codes, nor the reasons and talking points that were
        to be acted on (it must not be worked any more)."""
        if self.withdrawal is None:
            return self
        return self.model_copy(
            update=dict(
                score=None,
                triggers=(),
                reasons=(),
                talking_points=(),
                withdrawal=self.withdrawal.model_copy(update=dict(reason_codes=())),
            )
        )

    def row(self) -> dict[str, Any]:
        row = self.model_dump(exclude=set(_BODY))
        row["body"] = self.model_dump_json(include=set(_BODY))
        return row

    @classmethod
    def from_row(cls, row: Any) -> Alert:
        fields = {k: v for k, v in row._mapping.items() if k != "body"}
        for k in ("created_at", "opened_at", "expires_at", "disposed_at"):
            fields[k] = _aware(fields[k])
        return cls.model_validate({**fields, **json.loads(row._mapping["body"])})


def shown_to(role: Role, alerts: Iterable[Alert]) -> list[Alert]:
    """``alerts`` as ``role`` may see them. Compliance sees all of each. Others see a withdrawn
    alert's notice, not its reasons (``Alert.redacted``); an RM sees only the withdrawn alerts
    that had reached them (one withdrawn while queued never did)."""
    if role == "compliance":
        return list(alerts)
    return [
        alert.redacted()
        for alert in alerts
        if not (role == "rm" and alert.status == "withdrawn" and alert.opened_at is None)
    ]


def _aware(at: datetime | None) -> datetime | None:
    """SQLite gives times back without their zone (UTC, as written)."""
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _day_start(now: datetime) -> datetime:
    day: date = now.astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class AlertStore:
    """Alerts in the operational store. Allocation of an RM's daily capacity runs under a lock
    per RM (PostgreSQL advisory lock; SQLite has one writer at a time), so workers on other
    partitions cannot both take an RM's last place."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- the discipline --
    def blocked(
        self,
        customer_id: str,
        household_id: str | None,
        topics: Iterable[str],
        household_topics: Iterable[str],
        now: datetime,
        window: timedelta,
    ) -> dict[str, str]:
        """Topics that may not be alerted again now, with why (``open_alert``,
        ``recent_alert``, ``household_alert``)."""
        topics, shared = set(topics), set(household_topics)
        if not topics:
            return {}
        a = alerts_table.c
        live = or_(a.status.in_(("queued", "open")), a.created_at >= now - window)
        who = a.customer_id == customer_id
        if household_id is not None and shared:
            who = or_(who, and_(a.household_id == household_id, a.topic.in_(shared)))
        query = select(a.customer_id, a.topic, a.status).where(who, a.topic.in_(topics), live)
        out: dict[str, str] = {}
        with self.engine.connect() as connection:
            for owner, topic, status in connection.execute(query):
                if owner != customer_id:
                    out.setdefault(topic, "household_alert")
                elif status in ("queued", "open"):
                    out[topic] = "open_alert"
                else:
                    out.setdefault(topic, "recent_alert")
        return out

    def add(self, new: Sequence[Alert], capacity: int, now: datetime) -> list[Alert]:
        """Store ``new`` (status decided here): per RM, highest priority first, ``open`` while
        the RM's alerts opened today are under ``capacity``, ``queued`` after."""
        stored: list[Alert] = []
        by_rm: dict[str, list[Alert]] = {}
        for alert in new:
            by_rm.setdefault(alert.rm_id, []).append(alert)
        with self.engine.begin() as connection:
            for rm_id in sorted(by_rm):
                _lock_rm(connection, rm_id)
                left = capacity - _opened_today(connection, rm_id, now)
                for alert in sorted(by_rm[rm_id], key=lambda x: -x.priority):
                    if left > 0:
                        alert = alert.model_copy(update=dict(status="open", opened_at=now))
                        left -= 1
                    else:
                        alert = alert.model_copy(update=dict(status="queued", opened_at=None))
                    stored.append(alert)
            if stored:
                connection.execute(insert(alerts_table), [a.row() for a in stored])
        return stored

    def sweep(
        self,
        capacity: int,
        now: datetime,
        admit: Callable[[list[Alert]], Iterable[str]],
    ) -> list[Alert]:
        """Expire what is overdue, then open queued alerts where RMs have capacity left today
        (highest priority first), of those ``admit`` lets through: it is given the alerts due
        to open (outside any transaction) and returns the ids that may. One it holds back
        stays queued, or has been withdrawn; the next sweep takes the next in line. The alerts
        whose status changed here."""
        changed = self._expire(now)
        due = self._due_to_open(capacity, now)
        admitted = set(admit(due)) if due else set()
        return changed + self._open([a for a in due if a.alert_id in admitted], capacity, now)

    def _expire(self, now: datetime) -> list[Alert]:
        a = alerts_table.c
        with self.engine.begin() as connection:
            overdue = connection.execute(
                select(alerts_table).where(a.status.in_(ACTIONABLE), a.expires_at <= now)
            ).all()
            if not overdue:
                return []
            ids = [r._mapping["alert_id"] for r in overdue]
            connection.execute(
                update(alerts_table)
                .where(a.alert_id.in_(ids), a.status.in_(ACTIONABLE))
                .values(status="expired")
            )
        return [Alert.from_row(r).model_copy(update=dict(status="expired")) for r in overdue]

    def _due_to_open(self, capacity: int, now: datetime) -> list[Alert]:
        """Per RM with queued alerts, the highest priorities that fit today's capacity left."""
        a = alerts_table.c
        due: list[Alert] = []
        with self.engine.connect() as connection:
            waiting = connection.execute(
                select(a.rm_id).where(a.status == "queued").group_by(a.rm_id)
            ).all()
            for (rm_id,) in waiting:
                left = capacity - _opened_today(connection, rm_id, now)
                if left <= 0:
                    continue
                rows = connection.execute(
                    select(alerts_table)
                    .where(a.rm_id == rm_id, a.status == "queued")
                    .order_by(a.priority.desc(), a.created_at)
                    .limit(left)
                ).all()
                due += [Alert.from_row(r) for r in rows]
        return due

    def _open(self, admitted: Sequence[Alert], capacity: int, now: datetime) -> list[Alert]:
        """Open ``admitted`` under each RM's lock, highest priority first, while capacity is
        left and each is still queued (another worker may have opened or withdrawn it)."""
        a = alerts_table.c
        opened: list[Alert] = []
        by_rm: dict[str, list[Alert]] = {}
        for alert in admitted:
            by_rm.setdefault(alert.rm_id, []).append(alert)
        with self.engine.begin() as connection:
            for rm_id in sorted(by_rm):
                _lock_rm(connection, rm_id)
                left = capacity - _opened_today(connection, rm_id, now)
                for alert in sorted(by_rm[rm_id], key=lambda x: (-x.priority, x.created_at)):
                    if left <= 0:
                        break
                    done = connection.execute(
                        update(alerts_table)
                        .where(a.alert_id == alert.alert_id, a.status == "queued")
                        .values(status="open", opened_at=now)
                    ).rowcount
                    if done:
                        left -= 1
                        opened.append(alert.model_copy(update=dict(status="open", opened_at=now)))
        return opened

    def withdraw(self, withdrawn: Sequence[Alert]) -> list[Alert]:
        """Store ``withdrawn`` (alerts with their ``Withdrawal``) where they are still queued
        or open. Each comes back as stored now: withdrawn, or as another writer left it."""
        a = alerts_table.c
        stored: list[Alert] = []
        with self.engine.begin() as connection:
            for alert in withdrawn:
                done = connection.execute(
                    update(alerts_table)
                    .where(a.alert_id == alert.alert_id, a.status.in_(ACTIONABLE))
                    .values(status="withdrawn", body=alert.row()["body"])
                ).rowcount
                if done:
                    stored.append(alert)
                    continue
                row = connection.execute(
                    select(alerts_table).where(a.alert_id == alert.alert_id)
                ).first()
                if row is not None:  # erased meanwhile: nothing is left to show
                    stored.append(Alert.from_row(row))
        return stored

    # -- reading --
    def find(
        self, rm_id: str | None = None, status: Status | None = None, limit: int = 100
    ) -> list[Alert]:
        a = alerts_table.c
        query = select(alerts_table)
        if rm_id is not None:
            query = query.where(a.rm_id == rm_id)
        if status is not None:
            query = query.where(a.status == status)
        query = query.order_by(a.priority.desc(), a.created_at.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [Alert.from_row(r) for r in connection.execute(query)]

    def get(self, alert_id: str) -> Alert | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(alerts_table).where(alerts_table.c.alert_id == alert_id)
            ).first()
        return None if row is None else Alert.from_row(row)

    def dispose(
        self,
        alert_id: str,
        outcome: Outcome,
        by: str,
        now: datetime,
        note: str | None = None,
        contacts: ContactHistory | None = None,
    ) -> Alert:
        """Record what the RM did with an open alert (closing it); the contact it was goes to
        contact history in the same transaction."""
        a = alerts_table.c
        with self.engine.begin() as connection:
            done = connection.execute(
                update(alerts_table)
                .where(a.alert_id == alert_id, a.status == "open")
                .values(
                    status="closed",
                    disposition=outcome,
                    disposition_note=note,
                    disposed_at=now,
                    disposed_by=by,
                )
            ).rowcount
            row = connection.execute(select(alerts_table).where(a.alert_id == alert_id)).first()
            if row is None:
                raise NotFound("no alert with that id")
            alert = Alert.from_row(row)
            if not done:
                raise Conflict(f"the alert is {alert.status}: only an open alert takes one")
            kind = CONTACT_KIND[outcome]
            if kind is not None and contacts is not None:
                contacts.record_on(
                    connection,
                    [
                        ContactMade(
                            customer_id=alert.customer_id,
                            occurred_at=now,
                            channel=RM_CHANNEL,
                            kind=kind,
                            household_id=alert.household_id,
                            action_id=alert.action_id,
                            need=alert.need,
                            decision_id=alert.decision_id,
                        )
                    ],
                )
        return alert

    def lookable(self, customer_ids: Sequence[str]) -> dict[str, Look]:
        """Whether each customer may be rescored for alerts (see ``Look``)."""
        if not customer_ids:
            return {}
        with self.engine.connect() as connection:
            return _lookable(connection, customer_ids)

    def labels(self) -> list[dict[str, Any]]:
        """Training labels from dispositions: customer, need, when the alert was raised, 1 if
        they took the product, 0 if they said no (other outcomes are not labels)."""
        a = alerts_table.c
        query = (
            select(a.customer_id, a.need, a.created_at, a.disposition, a.decision_id)
            .where(a.disposition.in_(tuple(LABEL)), a.need.is_not(None))
            .order_by(a.created_at)
        )
        with self.engine.connect() as connection:
            return [
                {
                    "customer_id": r.customer_id,
                    "need": r.need,
                    "event_timestamp": _aware(r.created_at),
                    "label": LABEL[r.disposition],
                    "outcome": r.disposition,
                    "decision_id": r.decision_id,
                }
                for r in connection.execute(query)
            ]

    @staticmethod
    def erase(connection: Connection, customer_id: str) -> int:
        a = alerts_table.c
        return connection.execute(delete(alerts_table).where(a.customer_id == customer_id)).rowcount


@dataclass(frozen=True)
class Look:
    """What decides whether a customer is rescored for alerts at all."""

    may_profile: bool
    may_serve: bool
    has_rm: bool

    @property
    def skip(self) -> str | None:
        if not self.has_rm:
            return "no_rm"
        if not (self.may_profile or self.may_serve):
            return "no_consent_to_look"
        return None


def _lookable(connection: Connection, customer_ids: Sequence[str]) -> dict[str, Look]:
    """For many customers in one query each: an RM in the directory, and the current choice
    (latest in time, then in write order) for profiling and for service on the RM channel."""
    c, h = customers_table.c, consent_history.c
    with_rm = {
        row.customer_id
        for row in connection.execute(
            select(c.customer_id).where(c.customer_id.in_(customer_ids), c.rm_id.is_not(None))
        )
    }
    ranked = (
        select(
            h.customer_id,
            h.purpose,
            h.granted,
            func.row_number()
            .over(
                partition_by=(h.customer_id, h.purpose, h.channel),
                order_by=(h.recorded_at.desc(), h.id.desc()),
            )
            .label("rank"),
        )
        .where(
            h.customer_id.in_(sorted(with_rm)),
            or_(
                and_(h.purpose == "profiling", h.channel == ANY_CHANNEL),
                and_(h.purpose == "service", h.channel == RM_CHANNEL),
            ),
        )
        .subquery()
    )
    granted: dict[str, set[str]] = {}
    if with_rm:
        rows = connection.execute(
            select(ranked.c.customer_id, ranked.c.purpose).where(
                ranked.c.rank == 1, ranked.c.granted
            )
        )
        for customer_id, purpose in rows:
            granted.setdefault(customer_id, set()).add(purpose)
    return {
        cid: Look(
            "profiling" in granted.get(cid, ()), "service" in granted.get(cid, ()), cid in with_rm
        )
        for cid in customer_ids
    }


def _lock_rm(connection: Connection, rm_id: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"rm:{rm_id}"})


def _opened_today(connection: Connection, rm_id: str, now: datetime) -> int:
    a = alerts_table.c
    query = select(func.count()).where(a.rm_id == rm_id, a.opened_at >= _day_start(now))
    return int(connection.execute(query).scalar_one())


# --- the alerter --------------------------------------------------------------------------
@dataclass
class AlerterStats:
    rescored: int = 0
    considered: int = 0
    gated: int = 0
    raised: int = 0
    suppressed_by_gate: int = 0
    #: Alerts withdrawn because they no longer passed the gate when they were to reach the RM.
    withdrawn: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "skipped": dict(self.skipped)}


@dataclass(frozen=True)
class Inbox:
    """Alerts as listed, and how many were left out because the gate could not be asked."""

    alerts: list[Alert]
    unchecked: int


@dataclass(frozen=True)
class Considered:
    """Why a customer's alert is considered: needs that crossed and triggers that fired."""

    customer_id: str
    crossed: dict[str, float]
    fired: tuple[str, ...]
    origin: Origin | None


class Alerter:
    def __init__(
        self,
        decisions: DecisionService | Callable[[], DecisionService],
        features: FeatureReader,
        directory: CustomerDirectory,
        contacts: ContactHistory,
        store: AlertStore,
        policy: AlertPolicy,
        catalog: Catalog,
        memory: StateStore,
        gate: AlertGate,
        publish: Callable[[Sequence[Alert]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Built on first use, in the alerter's thread: loading the models takes seconds, and
        # the stream worker must not wait for it (nor need MLflow before a customer is due).
        self._decisions = decisions
        self.features = features
        self.directory = directory
        self.contacts = contacts
        self.store = store
        self.policy = policy
        self.catalog = catalog
        #: The gate again, at the moment an alert reaches the RM (opened, listed, disposed).
        self.gate = gate
        self.publish = publish
        self._unpublished: list[Alert] = []
        self._publishing = threading.Lock()
        self.clock = clock
        self.stats = AlerterStats()
        self._pending: dict[str, tuple[float, Origin | None]] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Each customer's scores and holding triggers at their last rescoring, kept beside
        #: the stream's window state: a restart or a rebalance does not forget them.
        self.memory = memory
        self._last_sweep = 0.0
        self._triggers = {t.id: t for t in policy.triggers}
        self._actions_of_need: dict[str, tuple[str, ...]] = {}
        for action in catalog.actions.values():
            if action.need and action.enabled and RM_CHANNEL in action.channels:
                self._actions_of_need.setdefault(action.need, ())
                self._actions_of_need[action.need] += (action.id,)

    @property
    def decisions(self) -> DecisionService:
        if not isinstance(self._decisions, DecisionService):
            self._decisions = self._decisions()
        return self._decisions

    def _models(self) -> dict[str, Any]:
        """One consistent set of the models with an alert threshold, for a whole batch."""
        models = self.decisions.models
        snapshot = getattr(models, "snapshot", None)
        current = snapshot() if snapshot else dict(models)
        return {need: m for need, m in current.items() if need in self.policy.thresholds}

    # -- fed by the stream worker --
    def touched(self, origins: Mapping[str, Origin | None]) -> None:
        """These customers' features were just written (cheap: called on the worker's path)."""
        now = time.monotonic()
        with self._mutex:
            for customer, origin in origins.items():
                first = self._pending.get(customer)
                self._pending[customer] = (first[0] if first else now, origin)
        self._wake.set()

    def due(self, now: float | None = None) -> dict[str, Origin | None]:
        """Customers first touched at least ``debounce_seconds`` ago (taken off the list)."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.policy.debounce_seconds
        with self._mutex:
            ready = {c: o for c, (t, o) in self._pending.items() if t <= cutoff}
            for customer in ready:
                del self._pending[customer]
        return ready

    # -- the work --
    def process(self, customers: Mapping[str, Origin | None]) -> list[Alert]:
        """Rescore ``customers``; raise, gate, store and publish what is due. Returns the alerts
        stored (open or queued)."""
        considered = self.consider(customers)
        now = self.clock()
        new: list[Alert] = []
        for item in considered:
            new += self._gate(item, now)
        stored = self.store.add(new, self.policy.rm_daily_capacity, now) if new else []
        self.stats.raised += len(stored)
        if stored and self.publish is not None:
            self._publish(stored)
        return stored

    def consider(self, customers: Mapping[str, Origin | None]) -> list[Considered]:
        """Who has a need crossing its threshold or a trigger coming to hold (with an RM, and
        consent to be looked at for it). One query tells who may be looked at and one read
        gives their last scores; features are read and scored only for them."""
        out: list[Considered] = []
        looks = self.store.lookable(list(customers))
        for look in looks.values():
            if look.skip:
                self.stats.skip(look.skip)
        ready = [c for c in customers if c in looks and not looks[c].skip]
        memory = dict(zip(ready, self.memory.get_many(ready), strict=True))
        remembered: dict[str, bytes] = {}
        models = self._models() if ready else {}
        for customer_id in ready:
            try:
                online = self.features.read(customer_id)
            except Exception as error:
                log.warning("alerts: online read failed, customer not rescored: %s", error)
                self.stats.skip("online_store_unavailable")
                continue
            values, _stale = online.fresh(self.clock()) if online.known else ({}, frozenset())
            scores: dict[str, float] = {}
            if looks[customer_id].may_profile and values:
                for need, model in models.items():
                    scores[need] = model.probability(model.row(values))
            # Triggers are judged on what is stored, as the gate's own conditions are.
            holding = frozenset(t.id for t in self.policy.triggers if t.holds(online.values))
            self.stats.rescored += 1
            before_scores, before_holding = _recalled(memory[customer_id])
            remembered[customer_id] = _memo(scores, holding)
            crossed = {
                need: score
                for need, score in scores.items()
                if score >= self.policy.thresholds[need]
                and before_scores.get(need, 0.0) < self.policy.thresholds[need]
            }
            fired = tuple(sorted(holding - before_holding))
            if crossed or fired:
                out.append(Considered(customer_id, crossed, fired, customers[customer_id]))
        self.memory.put_many(remembered)
        self.stats.considered += len(out)
        return out

    def _gate(self, item: Considered, now: datetime) -> list[Alert]:
        """The discipline, then the gate (its decision logged first), then the alerts."""
        known = self.directory.get(item.customer_id)
        if known is None or known.rm_id is None:
            self.stats.skip("no_rm")
            return []
        actions: dict[str, Action] = {}
        for need in item.crossed:
            for action_id in self._actions_of_need.get(need, ()):
                actions[action_id] = self.catalog.actions[action_id]
        for trigger_id in item.fired:
            for action_id in self._triggers[trigger_id].actions:
                actions[action_id] = self.catalog.actions[action_id]
        topics = {a.id: a.need or a.id for a in actions.values()}
        blocked = self.store.blocked(
            item.customer_id,
            known.household_id,
            topics.values(),
            [a.need for a in actions.values() if a.need],
            now,
            timedelta(hours=self.policy.window_hours),
        )
        for reason in blocked.values():
            self.stats.skip(reason)
        allowed = frozenset(a for a, topic in topics.items() if topic not in blocked)
        if not allowed:
            return []
        trigger = {
            "kind": "stream_trigger",
            "crossed": {need: round(score, 6) for need, score in sorted(item.crossed.items())},
            "fired": list(item.fired),
            "alert_policy_version": self.policy.content_version,
        }
        if item.origin is not None:
            trigger["event"] = item.origin.as_dict()
        made = self.decisions.decide(
            DecideForCustomer(
                customer_id=item.customer_id,
                channel=RM_CHANNEL,
                limit=self.policy.limit,
                trigger=trigger,
                actions=allowed,
            )
        )
        self.stats.gated += 1
        alerts = self._alerts(made, known.household_id, known.rm_id, item, now)
        if not alerts:
            self.stats.suppressed_by_gate += 1
        return alerts

    def _alerts(
        self,
        made: DecisionMade,
        household_id: str | None,
        rm_id: str,
        item: Considered,
        now: datetime,
    ) -> list[Alert]:
        out = []
        values = made.record.feature_values()
        for candidate in made.record.candidates:
            if not candidate.delivered:
                continue
            action = self.catalog.actions[candidate.action_id]
            reasons = [
                AlertReason(feature=r.feature, value=r.value, text=r.text)
                for r in made.reasons.get(candidate.need or "", ())
            ]
            fired = [t for t in item.fired if candidate.action_id in self._triggers[t].actions]
            for trigger_id in fired:  # a trigger's own conditions are reasons too
                for condition in self._triggers[trigger_id].when:
                    value = values.get(condition.feature)
                    text = describe(condition.feature, value)
                    reasons.append(AlertReason(feature=condition.feature, value=value, text=text))
            out.append(
                Alert(
                    alert_id=str(uuid.uuid4()),
                    decision_id=made.record.decision_id,
                    customer_id=made.customer_id,
                    household_id=household_id,
                    rm_id=rm_id,
                    topic=action.need or action.id,
                    need=action.need,
                    action_id=action.id,
                    title=action.title,
                    kind=action.kind,
                    score=candidate.score,
                    priority=candidate.priority,
                    status="queued",
                    created_at=now,
                    opened_at=None,
                    expires_at=now + timedelta(hours=self.policy.expire_hours),
                    triggers=tuple(fired),
                    reasons=tuple(_unique(reasons)),
                    talking_points=talking_points(
                        action, candidate.score, reasons, [self._triggers[t].title for t in fired]
                    ),
                    origin=item.origin.as_dict() if item.origin else {},
                )
            )
        return out

    def sweep(self) -> list[Alert]:
        """Expire what is overdue; open queued alerts where capacity is left, each only if it
        still passes the gate (one that cannot be checked now stays queued)."""
        now = self.clock()
        withdrawn: list[Alert] = []

        def admit(due: list[Alert]) -> list[str]:
            regated = self._regate(due, now, "open")
            withdrawn.extend(regated.withdrawn)
            return [a.alert_id for a in regated.allowed]

        changed = self.store.sweep(self.policy.rm_daily_capacity, now, admit)
        if (changed or withdrawn or self._unpublished) and self.publish is not None:
            self._publish([*withdrawn, *changed])
        return [*withdrawn, *changed]

    def inbox(self, rm_id: str | None, status: Status | None, limit: int) -> Inbox:
        """Alerts as listed (``AlertStore.find``) after a sweep, the queued and open ones asked
        the gate again: one that fails is withdrawn (and listed so unless only queued or open
        ones were asked for); one that cannot be checked now is left out and counted."""
        self.sweep()
        found = self.store.find(rm_id, status, limit)
        regated = self._regate([a for a in found if a.status in ACTIONABLE], self.clock(), "list")
        now_as = {a.alert_id: a for a in regated.withdrawn}
        listed = []
        for alert in found:
            if alert.alert_id in regated.unchecked:
                continue
            alert = now_as.get(alert.alert_id, alert)
            if status is None or alert.status == status:
                listed.append(alert)
        return Inbox(listed, len(regated.unchecked))

    def dispose(self, alert_id: str, outcome: Outcome, by: str, note: str | None = None) -> Alert:
        """Record what the RM did with an open alert, if it still passes the gate: one that
        no longer does is withdrawn and refused (409), as is one withdrawn before; if the
        gate cannot be asked now, nothing is recorded (503)."""
        alert = self.store.get(alert_id)
        if alert is None:
            raise NotFound("no alert with that id")
        if alert.status in ACTIONABLE:
            regated = self._regate([alert], self.clock(), "dispose")
            if alert_id in regated.unchecked:
                raise regated.unchecked[alert_id]
            alert = next(iter(regated.withdrawn), alert)
        if alert.withdrawal is not None:
            raise Conflict(
                f"the alert was withdrawn ({alert.withdrawal.text}): it takes no disposition",
                details={"status": alert.status, "withdrawal": alert.withdrawal.notice},
            )
        alert = self.store.dispose(alert_id, outcome, by, self.clock(), note, self.contacts)
        if self.publish is not None:
            self._publish([alert])
        return alert

    def _regate(self, alerts: Sequence[Alert], now: datetime, moment: Moment) -> Regated:
        """``AlertGate.check``, with what it withdrew stored (and published) as withdrawn."""
        regated = self.gate.check(alerts, now, moment)
        if regated.withdrawn:
            stored = self.store.withdraw(regated.withdrawn)
            self.stats.withdrawn += sum(a.status == "withdrawn" for a in stored)
            regated = regated.stored_as(stored)
            if self.publish is not None and moment != "open":  # the sweep publishes its own
                self._publish(regated.withdrawn)
        return regated

    def _publish(self, alerts: Sequence[Alert]) -> None:
        """Publish ``alerts`` after those whose publication failed before; if this fails too,
        keep them all (up to ``UNPUBLISHED_LIMIT``) for the next try."""
        assert self.publish is not None
        with self._publishing:
            # the topic's readers are not compliance: no rules' reasons
            batch = [*self._unpublished, *(a.redacted() for a in alerts)]
            try:
                self.publish(batch)
                self._unpublished = []
            except Exception as error:  # stored already: the inbox has them; the topic lags
                send_failures().labels("alert").inc(len(alerts))
                log.error("alerts: publishing %d alert(s) failed: %s", len(batch), error)
                self._unpublished = batch[-UNPUBLISHED_LIMIT:]
                if len(batch) > UNPUBLISHED_LIMIT:
                    given_up = len(batch) - UNPUBLISHED_LIMIT
                    send_failures().labels("alert_given_up").inc(given_up)
                    log.error("alerts: %d unpublished alert(s) given up", given_up)

    # -- the thread --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alerter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Process what is pending (debounce or not), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:  # the models, before the first customer is due (the worker is not waiting)
            assert self.decisions is not None
        except Exception as error:  # tried again when a customer is due
            log.error("alerts: the decision service could not be built yet: %s", error)
        while True:
            stopping = self._stopping.is_set()
            self._wake.wait(TICK_S)
            self._wake.clear()
            ready = self.due(float("inf") if stopping else None)
            try:
                if ready:
                    self.process(ready)
                if time.monotonic() - self._last_sweep >= 1.0:
                    self._last_sweep = time.monotonic()
                    self.sweep()
            except Exception as error:  # never let one bad batch stop alerting
                log.exception("alerts: a batch of %d customer(s) failed: %s", len(ready), error)
            if stopping:
                return


def talking_points(
    action: Action,
    score: float | None,
    reasons: Sequence[AlertReason],
    triggers: Sequence[str],
) -> tuple[str, ...]:
    """What the RM can say, from the reasons: the headline, each reason, the suggestion."""
    points = []
    if action.need and score is not None:
        points.append(f"{action.need.replace('_', ' ').capitalize()} interest {score:.2f}")
    points += [f"{t}" for t in triggers]
    points += [r.text for r in reasons]
    points.append(f"Suggested: {action.title[0].lower()}{action.title[1:]}")
    return tuple(dict.fromkeys(points))


def _unique(reasons: list[AlertReason]) -> list[AlertReason]:
    """One reason per feature, the first (a trigger's condition may also be a model's)."""
    first: dict[str, AlertReason] = {}
    for reason in reasons:
        first.setdefault(reason.feature, reason)
    return list(first.values())


def _memo(scores: Mapping[str, float], holding: frozenset[str]) -> bytes:
    return json.dumps(
        {"scores": {k: round(v, 6) for k, v in scores.items()}, "holding": sorted(holding)},
        separators=(",", ":"),
    ).encode()


def _recalled(memo: bytes | None) -> tuple[dict[str, float], frozenset[str]]:
    """The last scores and holding triggers; a customer never rescored has none (so a score
    above its threshold, or a trigger holding, counts as new)."""
    if memo is None:
        return {}, frozenset()
    data = json.loads(memo)
    return dict(data["scores"]), frozenset(data["holding"])


def alerts_publisher(producer: Producer, topic: str) -> Callable[[Sequence[Alert]], None]:
    def publish(alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            producer.send(topic, alert.customer_id, alert.model_dump_json().encode())
        producer.flush()

    return publish
