"""Contact history: what was shown to each customer, what they answered, and contacts made.

Feedback (impressions, accepts, declines, dismissals) and the bank's own contacts are appended
here; the gate reads the recent history of the customer and of their household to apply contact
caps, cool-offs and "already declined". Nothing is updated in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, delete, insert, or_, select

from consent.rules.model import ContactKind, ContactRecord
from consent.stores.customers import UPSERT_BATCH
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
        return self.recent_many({customer_id: household_id}, now, days)[customer_id]

    def recent_many(
        self, households: Mapping[str, str | None], now: datetime, days: int
    ) -> dict[str, tuple[ContactRecord, ...]]:
        """``recent`` of each customer of ``households`` (customer id to household id), in a
        query per ``UPSERT_BATCH`` of them."""
        ids = sorted(households)
        found: dict[str, list[ContactRecord]] = {c: [] for c in ids}
        members: dict[str, list[str]] = {}
        for customer_id in ids:
            if (household := households[customer_id]) is not None:
                members.setdefault(household, []).append(customer_id)
        since = now - timedelta(days=days)
        with self.engine.connect() as connection:
            for start in range(0, len(ids), UPSERT_BATCH):
                batch = ids[start : start + UPSERT_BATCH]
                theirs = sorted({h for c in batch if (h := households[c]) is not None})
                who: ColumnElement[bool] = contact_history.c.customer_id.in_(batch)
                if theirs:
                    who = or_(who, contact_history.c.household_id.in_(theirs))
                query = (
                    select(contact_history)
                    .where(who, contact_history.c.occurred_at >= since)
                    .order_by(contact_history.c.occurred_at, contact_history.c.id)
                )
                mine = set(batch)
                for row in connection.execute(query):
                    # Each customer of the batch it concerns once: as hers, or her household's.
                    concerned = {row.customer_id} & mine
                    concerned.update(c for c in members.get(row.household_id, ()) if c in mine)
                    for customer_id in concerned:
                        found[customer_id].append(_record(row, customer_id))
        return {c: tuple(records) for c, records in found.items()}

    @staticmethod
    def erase(connection: Connection, customer_id: str) -> int:
        result = connection.execute(
            delete(contact_history).where(contact_history.c.customer_id == customer_id)
        )
        return result.rowcount


def _record(row: Any, customer_id: str) -> ContactRecord:
    """A row of the history as ``customer_id``'s gate reads it."""
    return ContactRecord(
        occurred_at=row.occurred_at,
        channel=row.channel,
        kind=row.kind,
        action_id=row.action_id,
        need=row.need,
        household=row.customer_id != customer_id,
    )
