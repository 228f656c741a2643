"""RM alerts in the operational store (SQLite or PostgreSQL, the ``alerts`` table of
``consent.stores.store``): the discipline's queries, capacity allocation, the lifecycle's status
changes, dispositions (with their contact in the same transaction) and training labels.

It lives with the service's adapters rather than in ``consent/stores/``: it stores the service's
``Alert`` and raises the service's errors, and ``consent`` depends on nothing of the service."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from consent.rules.model import ContactKind
from consent.rules.vocabulary import ANY_CHANNEL
from consent.stores.contacts import ContactHistory, ContactMade
from consent.stores.tables import alerts as alerts_table
from consent.stores.tables import consent_history
from consent.stores.tables import customers as customers_table
from service.errors import Conflict, NotFound
from service.usecases.alert_model import (
    ACTIONABLE,
    CONTACT_KIND,
    LABEL,
    RM_CHANNEL,
    Alert,
    Look,
    Outcome,
    Status,
)

#: Kept in the row's JSON body rather than in columns of their own.
_BODY = {"title", "kind", "triggers", "reasons", "talking_points", "origin", "withdrawal"}


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
        wanted, shared = set(topics), set(household_topics)
        if not wanted:
            return {}
        a = alerts_table.c
        live = or_(a.status.in_(ACTIONABLE), a.created_at >= now - window)
        who = a.customer_id == customer_id
        if household_id is not None and shared:
            who = or_(who, and_(a.household_id == household_id, a.topic.in_(shared)))
        query = select(a.customer_id, a.topic, a.status).where(who, a.topic.in_(wanted), live)
        out: dict[str, str] = {}
        with self.engine.connect() as connection:
            for owner, topic, status in connection.execute(query):
                if owner != customer_id:
                    out.setdefault(topic, "household_alert")
                elif status in ACTIONABLE:
                    out[topic] = "open_alert"
                else:
                    out.setdefault(topic, "recent_alert")
        return out

    def lookable(self, customer_ids: Sequence[str]) -> dict[str, Look]:
        """Whether each customer may be rescored for alerts (see ``Look``)."""
        if not customer_ids:
            return {}
        with self.engine.connect() as connection:
            return _lookable(connection, customer_ids)

    # -- the lifecycle --
    def add(self, new: Sequence[Alert], capacity: int, now: datetime) -> list[Alert]:
        """Store ``new`` (status decided here): per RM, highest priority first, ``open`` while
        the RM's alerts opened today are under ``capacity``, ``queued`` after."""
        stored: list[Alert] = []
        with self.engine.begin() as connection:
            for rm_id, theirs in _by_rm(new).items():
                _lock_rm(connection, rm_id)
                left = capacity - _opened_today(connection, rm_id, now)
                for alert in sorted(theirs, key=lambda x: -x.priority):
                    if left > 0:
                        alert = alert.model_copy(update=dict(status="open", opened_at=now))
                        left -= 1
                    else:
                        alert = alert.model_copy(update=dict(status="queued", opened_at=None))
                    stored.append(alert)
            if stored:
                connection.execute(insert(alerts_table), [_row(a) for a in stored])
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
        return [_alert(r).model_copy(update=dict(status="expired")) for r in overdue]

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
                due += [_alert(r) for r in rows]
        return due

    def _open(self, admitted: Sequence[Alert], capacity: int, now: datetime) -> list[Alert]:
        """Open ``admitted`` under each RM's lock, highest priority first, while capacity is
        left and each is still queued (another worker may have opened or withdrawn it)."""
        a = alerts_table.c
        opened: list[Alert] = []
        with self.engine.begin() as connection:
            for rm_id, theirs in _by_rm(admitted).items():
                _lock_rm(connection, rm_id)
                left = capacity - _opened_today(connection, rm_id, now)
                for alert in sorted(theirs, key=lambda x: (-x.priority, x.created_at)):
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
                    .values(status="withdrawn", body=_row(alert)["body"])
                ).rowcount
                if done:
                    stored.append(alert)
                    continue
                row = connection.execute(
                    select(alerts_table).where(a.alert_id == alert.alert_id)
                ).first()
                if row is not None:  # erased meanwhile: nothing is left to show
                    stored.append(_alert(row))
        return stored

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
            alert = _alert(row)
            if not done:
                raise Conflict(f"the alert is {alert.status}: only an open alert takes one")
            kind = CONTACT_KIND[outcome]
            if kind is not None and contacts is not None:
                contacts.record_on(connection, [_contact(alert, kind, now)])
        return alert

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
            return [_alert(r) for r in connection.execute(query)]

    def get(self, alert_id: str) -> Alert | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(alerts_table).where(alerts_table.c.alert_id == alert_id)
            ).first()
        return None if row is None else _alert(row)

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
                    "event_timestamp": r.created_at,
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


def _row(alert: Alert) -> dict[str, Any]:
    row = alert.model_dump(exclude=_BODY)
    row["body"] = alert.model_dump_json(include=_BODY)
    return row


def _alert(row: Row[Any]) -> Alert:
    fields = {k: v for k, v in row._mapping.items() if k != "body"}
    return Alert.model_validate({**fields, **json.loads(row._mapping["body"])})


def _contact(alert: Alert, kind: ContactKind, now: datetime) -> ContactMade:
    return ContactMade(
        customer_id=alert.customer_id,
        occurred_at=now,
        channel=RM_CHANNEL,
        kind=kind,
        household_id=alert.household_id,
        action_id=alert.action_id,
        need=alert.need,
        decision_id=alert.decision_id,
    )


def _by_rm(alerts: Iterable[Alert]) -> dict[str, list[Alert]]:
    """``alerts`` by RM, the RMs in order (locks are always taken in the same order)."""
    by_rm: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_rm.setdefault(alert.rm_id, []).append(alert)
    return dict(sorted(by_rm.items()))


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


def _day_start(now: datetime) -> datetime:
    day = now.astimezone(UTC).date()
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
