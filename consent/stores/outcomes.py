"""Outcome events: what customers did that a recommendation may have caused (an application,
a product opened) or provoked (a complaint, a marketing opt-out), as the event stream reported
it. The lift report attributes them to the decisions before them; the customer's erasure
deletes them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, Engine, delete, func, select

from consent.rules.chain import pseudonym
from consent.stores.audit.writes import read_keys
from consent.stores.registry import insert_new
from consent.stores.tables import alerts, contact_history, outcome_events

OutcomeKind = Literal["application", "product_opened", "complaint", "opt_out"]

#: Rows read at a time: a report over months reads millions without holding them twice.
READ_BATCH = 20_000


@dataclass(frozen=True)
class Outcome:
    event_id: str
    customer_id: str
    occurred_at: datetime
    kind: OutcomeKind
    need: str | None = None
    channel: str | None = None


class OutcomeEvents:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, outcomes: Sequence[Outcome]) -> int:
        """Append ``outcomes``; one whose event is already recorded (a redelivery, a replay) is
        skipped. Returns how many were appended."""
        if not outcomes:
            return 0
        rows = [o.__dict__ for o in outcomes]
        with self.engine.begin() as connection:
            return insert_new(connection, outcome_events, outcome_events.c.event_id, rows)

    def between(self, since: datetime, until: datetime) -> Iterator[Outcome]:
        """The outcomes that occurred in ``[since, until)``, oldest first."""
        last: tuple[datetime, str] | None = None
        columns = outcome_events.c
        while True:
            query = select(outcome_events).where(
                columns.occurred_at >= since, columns.occurred_at < until
            )
            if last is not None:
                query = query.where(
                    (columns.occurred_at > last[0])
                    | ((columns.occurred_at == last[0]) & (columns.event_id > last[1]))
                )
            with self.engine.connect() as connection:
                rows = connection.execute(
                    query.order_by(columns.occurred_at, columns.event_id).limit(READ_BATCH)
                ).all()
            if not rows:
                return
            for row in rows:
                yield Outcome(
                    row.event_id, row.customer_id, row.occurred_at, row.kind, row.need, row.channel
                )
            last = (rows[-1].occurred_at, rows[-1].event_id)

    @staticmethod
    def erase(connection: Connection, customer_id: str) -> int:
        result = connection.execute(
            delete(outcome_events).where(outcome_events.c.customer_id == customer_id)
        )
        return result.rowcount or 0


def rm_conversions(engine: Engine, since: datetime, until: datetime) -> list[Outcome]:
    """Alerts an RM marked ``converted`` in ``[since, until)``, as outcomes for their need."""
    c = alerts.c
    with engine.connect() as connection:
        rows = connection.execute(
            select(c.alert_id, c.customer_id, c.disposed_at, c.need).where(
                c.disposition == "converted", c.disposed_at >= since, c.disposed_at < until
            )
        ).all()
    return [
        Outcome(f"alert:{r.alert_id}", r.customer_id, r.disposed_at, "application", r.need)
        for r in rows
    ]


def declines(engine: Engine, since: datetime, until: datetime, actions: Sequence[str]) -> int:
    """Offers of ``actions`` declined or dismissed in ``[since, until)``: by the customer
    (feedback) or as an RM's "not interested"."""
    h, a = contact_history.c, alerts.c
    with engine.connect() as connection:
        answered = connection.execute(
            select(func.count()).where(
                h.kind.in_(("decline", "dismiss")),
                h.action_id.in_(actions),
                h.occurred_at >= since,
                h.occurred_at < until,
            )
        ).scalar_one()
        refused = connection.execute(
            select(func.count()).where(
                a.disposition == "not_interested",
                a.action_id.in_(actions),
                a.disposed_at >= since,
                a.disposed_at < until,
            )
        ).scalar_one()
    return int(answered) + int(refused)


def pseudonyms(engine: Engine, customer_ids: Sequence[str]) -> dict[str, str]:
    """The customers' current audit pseudonyms (none for one erased or never decided for)."""
    with engine.connect() as connection:
        keys = read_keys(connection, customer_ids)
    return {customer_id: pseudonym(key, customer_id) for customer_id, key in keys.items()}
