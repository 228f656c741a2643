"""The consent registry and the audit log against SQLite and real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import StatementError

from consent.rules.model import ConsentGiven
from consent.rules.vocabulary import ConsentChannel
from consent.stores.audit.log import AuditLog
from consent.stores.registry import ConsentRegistry
from consent.stores.store import connect
from consent.stores.tables import audit_log, consent_history
from tests.integration.test_audit import record
from tests.tamper import unguarded

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def entry(granted: bool, at: datetime, channel: ConsentChannel = "rm") -> ConsentGiven:
    return ConsentGiven(
        customer_id="C42",
        purpose="marketing",
        channel=channel,
        granted=granted,
        recorded_at=at,
        source="test",
        notice_version="2026-01",
    )


def test_history_is_kept_and_the_latest_entry_is_the_state(operational_engine) -> None:
    registry = ConsentRegistry(operational_engine)
    registry.record([entry(True, T0), entry(True, T0, "email")])
    assert registry.current("C42")[("marketing", "rm")].granted
    registry.record([entry(False, T0 + timedelta(hours=1))])
    current = registry.current("C42")
    assert not current[("marketing", "rm")].granted
    assert current[("marketing", "email")].granted
    assert [e.granted for e in registry.history("C42")] == [True, True, False]
    assert registry.current("nobody") == {}


def test_a_withdrawal_is_seen_by_another_process_at_once(operational_engine) -> None:
    # A second engine stands for a second API process: there is no cache to go stale.
    other = ConsentRegistry(connect(operational_engine.url.render_as_string(hide_password=False)))
    first = ConsentRegistry(operational_engine)
    first.record([entry(True, T0)])
    assert other.current("C42")[("marketing", "rm")].granted
    first.record([entry(False, T0 + timedelta(seconds=1))])
    assert not other.current("C42")[("marketing", "rm")].granted
    other.engine.dispose()


def test_concurrent_writers_keep_one_chain_without_gaps_or_forks(operational_engine) -> None:
    log = AuditLog(operational_engine)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def write() -> None:
        barrier.wait()
        try:
            for _ in range(40):
                log.append(record())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = log.verify()
    assert result.ok, result
    assert result.records == 240


def test_tampering_is_found_on_every_backend(operational_engine) -> None:
    log = AuditLog(operational_engine)
    for _ in range(3):
        log.append(record())
    unguarded(operational_engine)
    with operational_engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 2).values(record_hash="sha256:" + "f" * 64)
        )
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2


def test_everyone_granted_at_a_time_is_who_current_would_have_found(operational_engine) -> None:
    """``granted_at`` (batch scoring's one query over all customers) ranks entries as
    ``current`` does: the latest recorded at or before the time wins, ties by write order."""
    registry = ConsentRegistry(operational_engine)

    def profiling(customer: str, granted: bool, at: datetime) -> ConsentGiven:
        return entry(granted, at).model_copy(
            update={"customer_id": customer, "purpose": "profiling", "channel": "any"}
        )

    registry.record(
        [
            profiling("A", True, T0),
            profiling("A", False, T0 + timedelta(days=2)),  # withdrew later
            profiling("B", False, T0),
            profiling("B", True, T0 + timedelta(days=1)),
            profiling("C", True, T0 + timedelta(days=1)),
            profiling("C", False, T0 + timedelta(days=1)),  # same moment: written last wins
            profiling("D", True, T0 + timedelta(days=3)),  # granted only later
        ]
    )
    registry.record([entry(True, T0).model_copy(update={"customer_id": "E"})])  # marketing only
    at_day = {d: registry.granted_at("profiling", "any", T0 + timedelta(days=d)) for d in range(4)}
    assert at_day == {0: {"A"}, 1: {"A", "B"}, 2: {"B"}, 3: {"B", "D"}}
    now = datetime.now(UTC)
    assert registry.granted_at("profiling", "any", now) == {
        c for c in "ABCDE" if (r := registry.current(c).get(("profiling", "any"))) and r.granted
    }


def test_the_directory_reads_many_customers_as_it_reads_one(operational_engine) -> None:
    from consent.rules.model import CustomerFacts
    from consent.stores.customers import CustomerDirectory, KnownCustomer

    directory = CustomerDirectory(operational_engine)
    people = [
        KnownCustomer(f"K{i}", None, "RM1", CustomerFacts(age=30 + i, vulnerable=i % 2 == 0))
        for i in range(7)
    ]
    directory.upsert(people)
    found = directory.get_many([f"K{i}" for i in range(10)])
    assert set(found) == {p.customer_id for p in people}  # K7..K9 unknown
    assert all(found[p.customer_id] == directory.get(p.customer_id) == p for p in people)


def test_every_stored_time_is_utc_whatever_offset_it_came_with(operational_engine) -> None:
    # SQLite keeps a datetime's wall clock and drops its offset: a +14:00 time written as given
    # read back fourteen hours late, and beat a withdrawal recorded after it. Written here
    # through the table itself, as the stores' other writers do (contacts, alerts, the audit).
    kiribati = timezone(timedelta(hours=14))
    granted = entry(True, T0).model_dump(exclude={"id"})
    with operational_engine.begin() as connection:
        connection.execute(
            insert(consent_history), [{**granted, "recorded_at": T0.astimezone(kiribati)}]
        )
    registry = ConsentRegistry(operational_engine)
    registry.record([entry(False, T0 + timedelta(minutes=1))])
    first, _ = registry.history("C42")
    assert first.recorded_at == T0 and first.recorded_at.utcoffset() == timedelta(0)
    assert registry.current("C42")[("marketing", "rm")].granted is False
    with operational_engine.connect() as connection:
        stored = connection.execute(select(consent_history.c.recorded_at)).scalars().all()
    assert stored == [T0, T0 + timedelta(minutes=1)]
    assert {t.tzinfo for t in stored} == {UTC}


def test_a_naive_time_is_refused_rather_than_guessed(operational_engine) -> None:
    registry = ConsentRegistry(operational_engine)
    with pytest.raises(StatementError, match="aware datetimes only"):
        registry.record(
            [entry(True, T0).model_copy(update={"recorded_at": T0.replace(tzinfo=None)})]
        )
    assert registry.history("C42") == []


def test_a_store_made_before_given_at_gains_the_new_columns_at_connect(
    operational_engine,
) -> None:
    # The table as the first release made it: no given_at, recorded_by or event_id.
    postgres = operational_engine.dialect.name == "postgresql"
    with operational_engine.begin() as connection:
        connection.execute(text("DROP TABLE consent_history"))
        connection.execute(
            text(
                f"CREATE TABLE consent_history (id {'BIGSERIAL' if postgres else 'INTEGER'} "
                "PRIMARY KEY, customer_id VARCHAR(64) "
                "NOT NULL, purpose VARCHAR(16) NOT NULL, channel VARCHAR(16) NOT NULL, granted "
                "BOOLEAN NOT NULL, recorded_at TIMESTAMP WITH TIME ZONE NOT NULL, source "
                "VARCHAR(64) NOT NULL, notice_version VARCHAR(32) NOT NULL)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO consent_history (id, customer_id, purpose, channel, granted, "
                "recorded_at, source, notice_version) VALUES (1000, 'C42', 'marketing', 'rm', "
                "true, :at, 'old', 'v0')"
            ),
            {
                "at": T0
                if operational_engine.dialect.name == "postgresql"
                else "2026-11-01 00:00:00"
            },
        )
    url = operational_engine.url.render_as_string(hide_password=False)
    for _ in range(2):  # idempotent
        engine = connect(url)
        registry = ConsentRegistry(engine)
        (old,) = registry.history("C42")
        assert (old.recorded_at, old.given_at, old.recorded_by) == (T0, T0, None)
        engine.dispose()
    engine = connect(url)
    registry = ConsentRegistry(engine)
    later = entry(False, T0 + timedelta(hours=1)).model_copy(update={"event_id": "e1"})
    assert registry.record([later]) == 1
    assert registry.record([later]) == 0  # the unique event id holds on the old table too
    assert registry.current("C42")[("marketing", "rm")].granted is False
    engine.dispose()
