"""The audit chain on the embedded SQLite store; concurrency on SQLite and PostgreSQL is in
tests/integration/test_operational_store.py."""

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from consent.audit import GENESIS, AuditLog
from consent.model import DecisionRecord
from consent.store import audit_log, connect


def record(customer: str = "C1") -> DecisionRecord:
    return DecisionRecord(
        decision_id=str(uuid.uuid4()),
        decided_at=datetime.now(UTC),
        trigger={"kind": "test"},
        customer_ref=customer,
        channel="mobile_app",
        candidates=(),
        delivered=(),
        consents_relied_on=(),
        features=(),
        models=(),
        policy_version="sha256:x",
        code_version="test",
        fallback=None,
        reason_codes=(),
        delivery_status="nothing_to_deliver",
    )


@pytest.fixture
def log(tmp_path) -> AuditLog:
    return AuditLog(connect(f"sqlite:///{tmp_path / 'ops.db'}"))


def test_records_chain_from_genesis_and_verify(log: AuditLog) -> None:
    first = log.append(record())
    second = log.append(record())
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert second.prev_hash == first.record_hash
    result = log.verify()
    assert result.ok and result.records == 2 and result.head_hash == second.record_hash


def test_tampering_names_the_first_bad_record(log: AuditLog) -> None:
    records = [record() for _ in range(5)]
    for r in records:
        log.append(r)
    with log.engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(body=audit_log.c.body + " ")
        )
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.first_bad_decision == records[2].decision_id
    assert result.records == 2


def test_a_deleted_record_is_a_gap(log: AuditLog) -> None:
    for _ in range(4):
        log.append(record())
    with log.engine.begin() as connection:
        connection.execute(audit_log.delete().where(audit_log.c.seq == 2))
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 3 and "gap" in (result.problem or "")


def test_get_and_export_by_customer(log: AuditLog) -> None:
    mine = record("C7")
    log.append(record("C1"))
    log.append(mine)
    assert log.get(mine.decision_id)["record"]["customer_ref"] == "C7"
    assert log.get("nope") is None
    assert [e["record"]["decision_id"] for e in log.export("C7")] == [mine.decision_id]
