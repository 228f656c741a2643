"""The consent registry: append-only history; the current state is derived from it.

There is no cache: every decision reads the current state from the operational store, so a
withdrawal applies to the very next decision after the write is acknowledged, in every process.
Choices arrive through the API (`PUT /v1/customers/{id}/consents`), as `consent_changed` events
on the stream, and from the bank's extract (`nextbest load`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from consent.rules.model import ConsentGiven
from consent.stores.customers import UPSERT_BATCH
from consent.stores.tables import consent_history

#: ``recorded_by`` of entries recorded from the event stream and from the bank's extract
#: (``nextbest load``); the API records ``<role>:<key name>`` (``recorder``).
STREAM_RECORDER = "stream"
LOAD_RECORDER = "load"


def recorder(role: str, name: str) -> str:
    """``recorded_by`` of what an API key wrote."""
    return f"{role}:{name}"


#: The insert that skips a row whose unique key is already there, per backend.
_UPSERTS: dict[str, Callable[[Table], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


def insert_new(connection: Connection, table: Table, key: Column[Any], rows: list[Any]) -> int:
    """Insert ``rows``, skipping each whose unique ``key`` is already there (a redelivery, a
    replay); returns how many were inserted."""
    dialect = connection.dialect.name
    if dialect not in _UPSERTS:
        raise NotImplementedError(f"no conflict-free insert for {dialect}")
    statement = (
        _UPSERTS[dialect](table).on_conflict_do_nothing(index_elements=[key.name]).returning(key)
    )
    # Counted by what was returned: rowcount is not reliable for this on every driver.
    return len(connection.execute(statement, rows).all())


_COLUMNS = (
    consent_history.c.id,
    consent_history.c.customer_id,
    consent_history.c.purpose,
    consent_history.c.channel,
    consent_history.c.granted,
    consent_history.c.recorded_at,
    consent_history.c.source,
    consent_history.c.notice_version,
    consent_history.c.given_at,
    consent_history.c.recorded_by,
    consent_history.c.event_id,
)


#: Which entry is a customer's current choice: the one recorded last in time, ties broken by
#: write order (``current`` and ``granted_at`` both rank by it).
_LATEST_FIRST = (consent_history.c.recorded_at.desc(), consent_history.c.id.desc())


_NAMES = tuple(c.name for c in _COLUMNS)


def _as_record(row: Sequence[Any]) -> ConsentGiven:
    """An entry read back (a row of ``_COLUMNS``), zipped with the names: a batch read builds
    thousands, and the row's mapping was made for each only to be copied."""
    return ConsentGiven.model_validate(dict(zip(_NAMES, row, strict=True)))


class ConsentRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, entries: Iterable[ConsentGiven]) -> int:
        """Append ``entries``; one that carries the id of a stream event already recorded is
        skipped (a redelivery, a replay). Returns how many were appended."""
        rows = [e.model_dump(exclude={"id"}) | {"event_id": e.event_id} for e in entries]
        if not rows:
            return 0
        with self.engine.begin() as connection:
            if not any(row["event_id"] for row in rows):
                connection.execute(insert(consent_history), rows)
                return len(rows)
            return insert_new(connection, consent_history, consent_history.c.event_id, rows)

    def current(self, customer_id: str) -> dict[tuple[str, str], ConsentGiven]:
        """The latest choice per (purpose, channel): the entry the bank recorded last wins
        (``recorded_at``, the registry's clock, never a time from outside), ties broken by
        write order. Ordering by that time, not by write order, keeps a reloaded extract (whose
        entries keep the extract's own times) from overriding choices recorded since."""
        return self.current_many([customer_id])[customer_id]

    def current_many(
        self, customer_ids: Iterable[str]
    ) -> dict[str, dict[tuple[str, str], ConsentGiven]]:
        """``current`` of each of ``customer_ids``, in a query per ``UPSERT_BATCH`` of them
        (every customer is in the result, with no choice as an empty mapping). One query
        serves a decision's one customer and a batch's thousands alike."""
        ids = sorted(set(customer_ids))
        found: dict[str, dict[tuple[str, str], ConsentGiven]] = {c: {} for c in ids}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), UPSERT_BATCH):
                ranked = (
                    select(
                        *_COLUMNS,
                        func.row_number()
                        .over(
                            partition_by=(
                                consent_history.c.customer_id,
                                consent_history.c.purpose,
                                consent_history.c.channel,
                            ),
                            order_by=_LATEST_FIRST,
                        )
                        .label("rank"),
                    )
                    .where(consent_history.c.customer_id.in_(ids[start : start + UPSERT_BATCH]))
                    .subquery()
                )
                query = select(*(ranked.c[c.name] for c in _COLUMNS)).where(ranked.c.rank == 1)
                for row in connection.execute(query):
                    record = _as_record(row)
                    found[record.customer_id][(record.purpose, record.channel)] = record
        return found

    def granted_at(
        self, purpose: str, channel: str, at: datetime, among: Sequence[str] | None = None
    ) -> set[str]:
        """Every customer (of ``among``, if given) whose choice for (purpose, channel) at ``at``
        was a grant: the entry ``current`` would have found then (recorded at or before
        ``at``). In one query, for batch work."""
        if at.utcoffset() is None:
            raise ValueError("at must be an aware datetime")
        if among is not None and not among:
            return set()
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
                *(() if among is None else (consent_history.c.customer_id.in_(list(among)),)),
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
