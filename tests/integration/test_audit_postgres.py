"""The audit log on real PostgreSQL: group commit under real threads and across engines (two API
processes), the advisory lock, pseudonyms and erasure, and a representative set of tamperings.
Every case on SQLite is in tests/integration/test_audit.py."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, delete, func, select, text

from consent import verify_audit as outside
from consent.rules.chain import OPERATION_REF, Checkpoint, mentions, verify_export
from consent.stores.audit.failures import AuditWriteFailed, DuplicateDecision
from consent.stores.audit.log import AuditLog
from consent.stores.audit.writes import erase_customer_key, lock_chain
from consent.stores.tables import audit_checkpoints, audit_log
from tests.integration.conftest import fresh_schema
from tests.integration.test_audit import (
    TAMPERINGS,
    N,
    Tampering,
    assert_one_chain,
    hammer,
    key_count,
    operation,
    other_engine,
    record,
    rich,
    rows,
)
from tests.integration.test_audit import (
    test_a_repeated_decision_fails_alone as a_repeated_decision_fails_alone,
)
from tests.tamper import unguarded

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    """An engine on a fresh schema of the real server."""
    with fresh_schema(postgres_url) as engine:
        yield engine


@pytest.fixture
def log(pg: Engine) -> AuditLog:
    return AuditLog(pg)


def test_eight_threads_make_one_chain_without_gaps_or_forks(log: AuditLog, pg: Engine) -> None:
    appended = hammer([log], threads=8, each=200)
    assert_one_chain(pg, log, appended)
    assert log.stats.appends == 1600 and log.stats.transactions < 1600


def test_two_processes_on_separate_engines_make_one_chain(log: AuditLog, pg: Engine) -> None:
    second = AuditLog(other_engine(pg))
    appended = hammer([log, second], threads=8, each=200)
    assert_one_chain(pg, log, appended)
    assert log.stats.appends == second.stats.appends == 800
    second.engine.dispose()


def test_a_new_customers_key_is_made_once_across_processes(log: AuditLog, pg: Engine) -> None:
    second = AuditLog(other_engine(pg))
    appended = hammer([log, second], threads=8, each=10, customers=1)
    assert key_count(pg) == 1
    assert {r.customer_ref for r in rows(pg)} == {second.pseudonym_of("C0000000")}
    assert_one_chain(pg, log, appended)
    second.engine.dispose()


def test_writers_waiting_too_long_for_the_chain_fail_and_leave_no_trace(pg: Engine) -> None:
    impatient = AuditLog(pg, lock_timeout_seconds=0.3)
    failures: list[AuditWriteFailed] = []
    holder = pg.connect()
    lock_chain(holder)  # another process is writing (or stuck) with the lock held

    def write() -> None:
        try:
            impatient.append(record())
        except AuditWriteFailed as error:
            failures.append(error)

    workers = [threading.Thread(target=write) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    holder.rollback()
    holder.close()
    assert len(failures) == 4 and {f.code for f in failures} == {"audit_unavailable"}
    assert rows(pg) == [] and key_count(pg) == 0
    assert impatient.append(record()).seq == 1 and impatient.verify().ok


def test_an_untouched_log_verifies_and_exports_verifiably(log: AuditLog) -> None:
    for i, who in enumerate(["C1", "Zoë-7", "C0012345", "a.b:c_d-e"] * 5):
        log.append(rich(who) if i % 2 else record(who, trigger={"ünï": "cödé", "n": i}))
    kept = Checkpoint.from_json(log.checkpoint().to_json())
    assert log.verify(checkpoint=kept).ok
    assert verify_export(log.export(batch=7), [kept]).ok


def test_forgetting_a_customer_on_postgres(log: AuditLog, pg: Engine) -> None:
    gone = [log.append(rich("C0012345")) for _ in range(3)]
    log.append(rich("C0054321"))
    assert log.forget("C0012345") and log.verify().ok
    assert list(log.export("C0012345")) == [] and key_count(pg, "C0012345") == 0
    for row in rows(pg):
        assert not any(mentions(str(value), "C0012345") for value in row)
    back = log.append(rich("C0012345"))
    assert back.customer_ref != gone[0].customer_ref
    assert [e["seq"] for e in log.export("C0012345")] == [back.seq]


def test_erasure_joins_the_callers_transaction(log: AuditLog, pg: Engine) -> None:
    log.append(rich("C0012345"))
    with pg.connect() as connection:
        assert erase_customer_key(connection, "C0012345")
        connection.rollback()
    assert key_count(pg, "C0012345") == 1
    with pg.begin() as connection:
        erase_customer_key(connection, "C0012345")
    assert key_count(pg, "C0012345") == 0 and log.verify().ok


def test_export_by_customer_and_time_range(log: AuditLog) -> None:
    done = [log.append(rich("C7" if i % 2 else "C8")) for i in range(7)]
    since = done[1].recorded_at.astimezone(ZoneInfo("America/New_York"))
    until = done[5].recorded_at
    assert [e["seq"] for e in log.export(since=since, until=until, batch=2)] == [2, 3, 4, 5]
    assert [e["seq"] for e in log.export("C7", since=since)] == [2, 4, 6]
    later = done[-1].recorded_at + timedelta(seconds=1)
    assert list(log.export(since=later)) == []


def test_record_bodies_are_compressed_with_lz4(pg: Engine) -> None:
    with pg.connect() as connection:
        method = connection.execute(
            text(
                "select attcompression from pg_attribute "
                "where attrelid = 'audit_log'::regclass and attname = 'body'"
            )
        ).scalar()
    assert method == "l"


REPRESENTATIVE = {
    "body-middle",
    "body_whitespace-last",
    "decision_id-middle",
    "recorded_at-middle",
    "customer_ref-first",
    "prev_hash-middle",
    "record_hash-last",
    "seq-middle",
    "delete-first",
    "delete-last",
    "truncate-tail",
    "insert-spliced-in-middle",
    "swap-seqs",
    "swap-bodies",
    "edit-and-rechain",
}


@pytest.mark.parametrize(
    "tampering", [t for t in TAMPERINGS if t.name in REPRESENTATIVE], ids=lambda t: t.name
)
def test_tampering_is_found_on_postgres(log: AuditLog, pg: Engine, tampering: Tampering) -> None:
    for i in range(N):
        log.append(record(f"C{i % 2}") if i % 3 else rich(f"C{i % 2}"))
    kept = log.checkpoint()
    unguarded(pg)
    with pg.begin() as connection:
        connection.execute(delete(audit_checkpoints))
    tampering.act(pg)
    chain = log.verify()
    if tampering.found_at is None:
        assert chain.ok
    else:
        assert (chain.ok, chain.first_bad_seq) == (False, tampering.found_at)
        assert tampering.problem in (chain.problem or "")
    assert not log.verify(checkpoint=kept).ok


def test_the_unique_constraints_refuse_a_fork(log: AuditLog, pg: Engine) -> None:
    first = log.append(record())
    log.append(record())
    fork: dict[str, Any] = {
        "seq": 3,
        "decision_id": str(uuid.uuid4()),
        "recorded_at": first.recorded_at,
        "customer_ref": first.customer_ref,
        "prev_hash": first.record_hash,  # a second child of record 1
        "record_hash": "sha256:" + "1" * 64,
        "body": "{}",
    }
    with pytest.raises(Exception, match="prev_hash"), pg.begin() as connection:
        connection.execute(audit_log.insert().values(fork))
    with pg.connect() as connection:
        assert connection.execute(select(func.count()).select_from(audit_log)).scalar() == 2


def test_a_repeated_decision_fails_alone_on_postgres(log: AuditLog, pg: Engine) -> None:
    """Here a group's rows go in as one multi-row statement: the repeat must still fail alone
    and the rest of its group be written."""
    a_repeated_decision_fails_alone(log, pg)


@pytest.mark.parametrize("size", [1, 4, 40])
def test_groups_small_and_large_go_in_whole(log: AuditLog, pg: Engine, size: int) -> None:
    """A group goes in as one call of the append function: every record is written, in
    order, on one chain."""
    log.append(record())
    done = log.append_many([rich(f"C{i}") for i in range(size)])
    assert [a.seq for a in done] == list(range(2, size + 2))
    assert len(rows(pg)) == size + 1 and log.verify().ok


def _functions(pg: Engine) -> list[str]:
    """The append functions in the schema (the guard's functions are always there)."""
    with pg.connect() as connection:
        return sorted(
            connection.execute(
                text(
                    "select proname from pg_proc "
                    "where pronamespace = current_schema()::regnamespace "
                    "and proname like 'nextbest_audit_append%'"
                )
            ).scalars()
        )


def test_the_append_function_writes_what_python_would(log: AuditLog, pg: Engine) -> None:
    """Pseudonym, body and hash made in the database match the Python definitions: ids with
    non-ASCII letters, and decision ids that JSON must escape."""
    odd_ids = ['d"quoted"', "d\\back\\slash", "d-ünïcödé-✓", "d\ttab\u0001ctl"]
    for who, decision_id in zip(["Zoë-7", "C1", "客户-42", "a.b:c_d-e"], odd_ids, strict=True):
        done = log.append(rich(who, decision_id=decision_id))
        assert done.customer_ref == log.pseudonym_of(who)
    assert _functions(pg) == ["nextbest_audit_append_v2"]
    assert log.verify().ok
    stored = rows(pg)
    assert [r.decision_id for r in stored] == odd_ids
    for row in stored:  # the body names the customer by the same pseudonym as its column
        assert row.customer_ref in row.body and "cref:" + "0" * 8 not in row.body
    # The leaf the function stores is the one an auditor computes from the export.
    exported = {e["seq"]: e for e in log.export()}
    for row in stored:
        assert bytes(row.leaf_hash) == outside.leaf_hash(outside.record_leaf(exported[row.seq]))


@pytest.fixture
def writer_without_create(pg: Engine) -> Iterator[Engine]:
    """A second process logged in as a role that may write the tables but not create in the
    schema, as a bank's runtime role often is (``scripts/services`` lets the test role make
    roles)."""
    role = f"nb_writer_{uuid.uuid4().hex[:8]}"
    with pg.begin() as connection:
        schema = connection.execute(text("select current_schema()")).scalar()
        connection.execute(text(f"create role {role} login password 'w'"))
        connection.execute(text(f"grant usage on schema {schema} to {role}"))
        connection.execute(
            text(f"grant select, insert, delete on all tables in schema {schema} to {role}")
        )
    url = pg.url.set(username=role, password="w")
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        with pg.begin() as connection:
            connection.execute(text(f"revoke all on all tables in schema {schema} from {role}"))
            connection.execute(text(f"revoke all on schema {schema} from {role}"))
            connection.execute(text(f"drop role {role}"))


def test_a_role_that_cannot_create_the_function_appends_with_statements(
    pg: Engine, writer_without_create: Engine
) -> None:
    """Without the function the writer falls back to its statements, under the same lock: a
    writer of each kind at once still make one chain."""
    limited = AuditLog(writer_without_create)
    assert limited.append(rich("C0012345")).seq == 1
    assert _functions(pg) == []
    full = AuditLog(pg)
    appended = hammer([full, limited], threads=8, each=50)
    assert _functions(pg) == ["nextbest_audit_append_v2"]
    assert_one_chain(pg, full, [rows(pg)[0].decision_id, *appended])
    assert limited.pseudonym_of("C0012345") == full.pseudonym_of("C0012345")


def test_a_dropped_function_is_made_again(log: AuditLog, pg: Engine) -> None:
    log.append(record())
    with pg.begin() as connection:
        connection.execute(text("drop function nextbest_audit_append_v2"))
    with pytest.raises(AuditWriteFailed):
        log.append(record())  # this group fails, nothing is written ...
    assert log.append(record()).seq == 2  # ... and the next one makes the function again
    assert len(rows(pg)) == 2 and log.verify().ok


def test_appends_on_an_event_loop_make_one_chain_in_groups(log: AuditLog, pg: Engine) -> None:
    """The API's path: records appended together on a loop go in together, one chain, each
    caller told its own place; a repeated decision among them fails alone."""
    first = log.append(record())
    repeated = record(decision_id=first.decision_id)

    async def append_all() -> list[Any]:
        try:
            return await asyncio.gather(
                *(log.append_async(rich(f"C{i % 5}")) for i in range(40)),
                log.append_async(repeated),
                return_exceptions=True,
            )
        finally:
            await log.close_async()

    *done, duplicate = asyncio.run(append_all())
    assert isinstance(duplicate, DuplicateDecision)
    assert sorted(a.seq for a in done) == list(range(2, 42))
    assert {a.decision_id for a in done} == {r.decision_id for r in rows(pg)[1:]}
    assert log.stats.transactions < 41 and log.verify().ok


def test_on_an_event_loop_a_dropped_function_is_made_again(log: AuditLog, pg: Engine) -> None:
    log.append(record())
    with pg.begin() as connection:
        connection.execute(text("drop function nextbest_audit_append_v2"))

    async def twice() -> tuple[Any, Any]:
        try:
            failed = await asyncio.gather(log.append_async(record()), return_exceptions=True)
            return failed[0], await log.append_async(record())
        finally:
            await log.close_async()

    failed, appended = asyncio.run(twice())
    assert isinstance(failed, AuditWriteFailed)  # nothing written for that group ...
    assert appended.seq == 2  # ... and the next one made the function again
    assert len(rows(pg)) == 2 and log.verify().ok


def test_on_an_event_loop_a_writer_whose_connection_was_ended_opens_a_new_one(
    log: AuditLog, pg: Engine
) -> None:
    """The server ends the writer's connection between two groups (a restart, an
    administrator): that group fails, as its commit cannot be known, and the next one writes
    on a new connection. Nothing is lost or doubled in the chain."""

    async def around_an_ending() -> tuple[Any, Any, Any]:
        try:
            first = await log.append_async(record())
            writer = log.writer_on(asyncio.get_running_loop())
            assert writer is not None
            assert writer.connection is not None
            with pg.connect() as admin:
                ended = admin.execute(
                    text("SELECT pg_terminate_backend(:p)"),
                    {"p": writer.connection.get_server_pid()},
                ).scalar()
                assert ended is True
            failed = await asyncio.gather(log.append_async(record()), return_exceptions=True)
            return first, failed[0], await log.append_async(record())
        finally:
            await log.close_async()

    first, failed, after = asyncio.run(around_an_ending())
    assert first.seq == 1
    assert isinstance(failed, AuditWriteFailed)
    assert after.seq == 2 and [r.seq for r in rows(pg)] == [1, 2] and log.verify().ok


def test_operation_records_and_group_commits_make_one_chain(log: AuditLog, pg: Engine) -> None:
    """A batch run's record (its own transaction) among decisions written by the database's
    append function, from another process: one chain, and the operation names nobody."""
    second = AuditLog(other_engine(pg))
    ops: list[str] = []

    def operate() -> None:
        for _ in range(10):
            ops.append(second.append_operation(operation()).decision_id)

    worker = threading.Thread(target=operate)
    worker.start()
    appended = hammer([log], threads=4, each=50)
    worker.join()
    assert_one_chain(pg, log, appended + ops)
    assert {r.customer_ref for r in rows(pg) if r.decision_id in ops} == {OPERATION_REF}
    assert verify_export(log.export()).ok
    second.engine.dispose()
