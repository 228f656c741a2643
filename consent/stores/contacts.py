"""Contact history: what was shown to each customer, what they answered, and contacts made.

Feedback (impressions, accepts, declines, dismissals) and the bank's own contacts are appended
here; the gate reads the recent history of the customer and of their household to apply contact
caps, cool-offs and "already declined". Nothing is updated in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, or_, select

from consent.rules.model import ContactKind, ContactRecord
from consent.stores.tables import contact_history


@dataclass(frozen=True)
class ContactMade:
    """One entry to append (past tense: it happened)."""

    customer_id: str
    occurred_at: datetime
    channel: str
    kind: ContactKind
    household_id: str | None = None
    action_id: str | None = None
    need: str | None = None
    decision_id: str | None = None
    #: Who reported it: ``<role>:<API key name>`` for feedback; None for the bank's own.
    recorded_by: str | None = None


class ContactHistory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, entries: Iterable[ContactMade]) -> int:
        with self.engine.begin() as connection:
            return self.record_on(connection, entries)

    @staticmethod
    def record_on(connection: Connection, entries: Iterable[ContactMade]) -> int:
        """Append ``entries`` within the caller's transaction."""
        rows = [e.__dict__ for e in entries]
        if rows:
            connection.execute(insert(contact_history), rows)
        return len(rows)

    def recent(
        self, customer_id: str, household_id: str | None, now: datetime, days: int
    ) -> tuple[ContactRecord, ...]:
        """The customer's and their household's history of the last ``days`` days, oldest
        first; entries of other household members are marked ``household=True``."""
        who = contact_history.c.customer_id == customer_id
        if household_id is not None:
            who = or_(who, contact_history.c.household_id == household_id)
        query = (
            select(contact_history)
            .where(who, contact_history.c.occurred_at >= now - timedelta(days=days))
            .order_by(contact_history.c.occurred_at, contact_history.c.id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return tuple(
            ContactRecord(
                occurred_at=row.occurred_at,
                channel=row.channel,
                kind=row.kind,
                action_id=row.action_id,
                need=row.need,
                household=row.customer_id != customer_id,
            )
            for row in rows
        )

    @staticmethod
    def erase(connection: Connection, customer_id: str) -> int:
        result = connection.execute(
            delete(contact_history).where(contact_history.c.customer_id == customer_id)
        )
        return result.rowcount
