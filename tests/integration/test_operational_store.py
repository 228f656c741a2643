"""The consent registry and the audit log against SQLite and real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from consent.audit import AuditLog
from consent.model import ConsentGiven
from consent.registry import ConsentRegistry
from consent.store import audit_log, connect
from tests.unit.test_audit import record

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def entry(granted: bool, at: datetime, channel: str = "rm") -> ConsentGiven:
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
    with operational_engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 2).values(record_hash="sha256:" + "f" * 64)
        )
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 2
