"""The consent registry: append-only history; the current state is derived from it.

There is no cache: every decision reads the current state from the operational store, so a
withdrawal applies to the very next decision after the write is acknowledged, in every process.
Choices arrive through the API (`PUT /v1/customers/{id}/consents`), as `consent_changed` events
on the stream, and from the bank's extract (`nextbest load`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select

from consent.model import ConsentGiven
from consent.store import consent_history

_COLUMNS = (
    consent_history.c.id,
    consent_history.c.customer_id,
    consent_history.c.purpose,
    consent_history.c.channel,
    consent_history.c.granted,
    consent_history.c.recorded_at,
    consent_history.c.source,
    consent_history.c.notice_version,
)


#: Which entry is a customer's current choice: the one recorded last in time, ties broken by
#: write order (``current`` and ``granted_at`` both rank by it).
_LATEST_FIRST = (consent_history.c.recorded_at.desc(), consent_history.c.id.desc())


def _as_record(row: object) -> ConsentGiven:
    mapping = dict(row._mapping)  # type: ignore[attr-defined]
    recorded_at = mapping["recorded_at"]
    if recorded_at.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        mapping["recorded_at"] = recorded_at.replace(tzinfo=UTC)
    return ConsentGiven.model_validate(mapping)


class ConsentRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, entries: Iterable[ConsentGiven]) -> int:
        rows = [e.model_dump(exclude={"id"}) for e in entries]
        if not rows:
            return 0
        with self.engine.begin() as connection:
            connection.execute(insert(consent_history), rows)
        return len(rows)

    def current(self, customer_id: str) -> dict[tuple[str, str], ConsentGiven]:
        """The latest choice per (purpose, channel): the entry recorded last in time wins, ties
        broken by write order. Ordering by time, not by write order, keeps an old choice that
        arrives late (a redelivered event, a reloaded extract) from overriding a newer one."""
        ranked = (
            select(
                *_COLUMNS,
                func.row_number()
                .over(
                    partition_by=(consent_history.c.purpose, consent_history.c.channel),
                    order_by=_LATEST_FIRST,
                )
                .label("rank"),
            )
            .where(consent_history.c.customer_id == customer_id)
            .subquery()
        )
        query = select(*(ranked.c[c.name] for c in _COLUMNS)).where(ranked.c.rank == 1)
        with self.engine.connect() as connection:
            records = [_as_record(row) for row in connection.execute(query)]
        return {(r.purpose, r.channel): r for r in records}

    def granted_at(self, purpose: str, channel: str, at: datetime) -> set[str]:
        """Every customer whose choice for (purpose, channel) at ``at`` was a grant: the entry
        ``current`` would have found then (recorded at or before ``at``). In one query, for
        batch work over all customers."""
        if at.utcoffset() is None:
            raise ValueError("at must be an aware datetime")
        ranked = (
            select(
                consent_history.c.customer_id,
                consent_history.c.granted,
                func.row_number()
                .over(partition_by=consent_history.c.customer_id, order_by=_LATEST_FIRST)
                .label("rank"),
            )
            .where(
                consent_history.c.purpose == purpose,
                consent_history.c.channel == channel,
                consent_history.c.recorded_at <= at.astimezone(UTC),
            )
            .subquery()
        )
        query = select(ranked.c.customer_id).where(ranked.c.rank == 1, ranked.c.granted)
        with self.engine.connect() as connection:
            return set(connection.scalars(query))

    @staticmethod
    def erase(connection: Connection, customer_id: str) -> int:
        """Delete a customer's whole consent history (right to erasure)."""
        result = connection.execute(
            delete(consent_history).where(consent_history.c.customer_id == customer_id)
        )
        return result.rowcount

    def history(self, customer_id: str) -> list[ConsentGiven]:
        query = (
            select(*_COLUMNS)
            .where(consent_history.c.customer_id == customer_id)
            .order_by(consent_history.c.id)
        )
        with self.engine.connect() as connection:
            return [_as_record(row) for row in connection.execute(query)]
