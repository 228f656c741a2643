"""The audit log on the embedded SQLite store: the chain and every way of tampering with it,
group commit under real threads, pseudonyms, erasure, checkpoints and export. The same log on
real PostgreSQL is in tests/integration/test_audit_postgres.py."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, delete, func, insert, select, update

from consent import verify_audit as outside
from consent.rules.chain import (
    GENESIS,
    OPERATION_REF,
    Checkpoint,
    hash_record,
    mentions,
    pseudonym,
    record_leaf_hash,
    timestamp,
    verify_export,
)
from consent.rules.model import Candidate, ConsentGiven, RuleOutcome
from consent.rules.record import (
    DecisionRecord,
    FeatureValue,
    ModelUsed,
    OperationRecord,
    is_operation,
)
from consent.stores.audit.failures import AuditWriteFailed, DuplicateDecision
from consent.stores.audit.log import AuditLog
from consent.stores.audit.writes import erase_customer_key
from consent.stores.store import connect
from consent.stores.tables import audit_checkpoints, audit_log, consent_history, customer_keys

T0 = datetime(2026, 11, 1, 9, tzinfo=UTC)


def record(customer: str = "C1", **changes: Any) -> DecisionRecord:
    """A minimal decision record (the integration tests use it too)."""
    fields: dict[str, Any] = {
        "decision_id": str(uuid.uuid4()),
        "decided_at": datetime.now(UTC),
        "trigger": {"kind": "test"},
        "customer_ref": customer,
        "channel": "mobile_app",
        "candidates": (),
        "delivered": (),
        "consents_relied_on": (),
        "features": (),
        "models": (),
        "policy_version": "sha256:x",
        "code_version": "test",
        "fallback": None,
        "reason_codes": (),
        "delivery_status": "nothing_to_deliver",
    }
    fields.update(changes)
    return DecisionRecord(**fields)


def _rule(rule_id: str, passed: bool, reason: str | None, detail: str) -> RuleOutcome:
    values: dict[str, Any] = {
        "rule_id": rule_id,
        "passed": passed,
        "reason_code": reason,
        "detail": detail,
    }
    if "rule_version" in RuleOutcome.model_fields:  # being added to the domain model
        values["rule_version"] = "sha256:" + "1" * 64
    return RuleOutcome(**values)


def rich(customer: str = "C0012345", **changes: Any) -> DecisionRecord:
    """A record like the service makes: candidates, rules, features (one tiny float, which
    JSON libraries write differently), models, non-ASCII text and the customer's consents."""
    consent = ConsentGiven(
        customer_id=customer,
        purpose="marketing",
        channel="mobile_app",
        granted=True,
        recorded_at=T0 - timedelta(days=30),
        source="app",
        notice_version="2026-01",
        id=41,
    )
    candidate = Candidate(
        action_id="mortgage_consultation",
        need="mortgage",
        kind="sales",
        score=0.4123456789,
        value=900.0,
        priority=371.111111,
        rules=(
            _rule("consent.purpose_channel", True, None, "marketing consent granted"),
            _rule("contact.quiet_hours", False, "QUIET_HOURS", "22:00 in Europe/Zürich"),
        ),
        delivered=False,
    )
    fields: dict[str, Any] = {
        "trigger": {"kind": "event", "kafka": {"topic": "nextbest.events", "offset": 7}},
        "candidates": (candidate,),
        "consents_relied_on": (consent,),
        "features": (
            FeatureValue(name="txn_count_7d", value=12.0, as_of=T0, age_seconds=1e-07),
            FeatureValue(name="salary_in_30d", value=None, as_of=None, age_seconds=None),
        ),
        "models": (ModelUsed(need="mortgage", name="nextbest-mortgage", version="3", run_id="r1"),),
        "reason_codes": ("QUIET_HOURS",),
    }
    fields.update(changes)
    return record(customer, **fields)


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:
    engine = connect(f"sqlite:///{tmp_path / 'ops.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine: Engine) -> AuditLog:
    return AuditLog(engine)


def other_engine(engine: Engine) -> Engine:
    """A second engine on the same database: another API process."""
    return connect(engine.url.render_as_string(hide_password=False))


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(audit_log).order_by(audit_log.c.seq)))


def key_count(engine: Engine, customer: str | None = None) -> int:
    query = select(func.count()).select_from(customer_keys)
    if customer is not None:
        query = query.where(customer_keys.c.customer_id == customer)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def hammer(writers: list[AuditLog], threads: int, each: int, customers: int = 25) -> list[str]:
    """``threads`` real threads (spread over ``writers``) append ``each`` records, checking
    that every appended record is readable by another connection the moment append returns.
    The decision ids appended, in no particular order."""
    appended: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)
    guard = threading.Lock()

    def write(n: int) -> None:
        log = writers[n % len(writers)]
        reader = writers[(n + 1) % len(writers)]
        barrier.wait()
        try:
            for i in range(each):
                r = rich(f"C{(n * each + i) % customers:07d}")
                done = log.append(r)
                # Committed before returning: any other connection sees it at once.
                assert reader.get(r.decision_id)["record_hash"] == done.record_hash  # type: ignore[index]
                with guard:
                    appended.append(r.decision_id)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    return appended


def assert_one_chain(engine: Engine, log: AuditLog, appended: list[str]) -> None:
    stored = rows(engine)
    assert [r.seq for r in stored] == list(range(1, len(appended) + 1))
    assert sorted(r.decision_id for r in stored) == sorted(appended)
    result = log.verify()
    assert result.ok, result
    assert result.records == len(appended) and result.head_hash == stored[-1].record_hash


# --- the chain ---


def test_records_chain_from_genesis_and_verify(log: AuditLog) -> None:
    first = log.append(record())
    second = log.append(record())
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.record_hash)
    result = log.verify()
    assert result.ok and result.records == 2 and result.head_hash == second.record_hash
    assert result.problem is None and result.first_bad_seq is None


def test_the_hash_covers_every_column_and_the_body_byte_for_byte(
    log: AuditLog, engine: Engine
) -> None:
    done = log.append(rich())
    (row,) = rows(engine)
    assert (
        row.record_hash
        == done.record_hash
        == hash_record(
            GENESIS, 1, row.decision_id, timestamp(row.recorded_at), row.customer_ref, row.body
        )
    )
    header = json.dumps(
        {
            "customer_ref": row.customer_ref,
            "decision_id": row.decision_id,
            "recorded_at": timestamp(done.recorded_at),
            "seq": 1,
        },
        separators=(",", ":"),
    )
    assert timestamp(done.recorded_at).endswith("Z") and len(timestamp(done.recorded_at)) == 27
    expected = hashlib.sha256(f"{GENESIS}\n{header}\n{row.body}".encode()).hexdigest()
    assert done.record_hash == f"sha256:{expected}"


def test_each_record_stores_its_merkle_leaf_as_the_outside_verifier_computes_it(
    log: AuditLog, engine: Engine
) -> None:
    """The leaf kept with a record is the one an auditor's copy of verify_audit.py computes
    from the exported record, for decisions (odd ids included) and operations alike."""
    for who, decision_id in (("Zoë-7", 'd"quoted"'), ("客户-42", "d\ttab\u0001ctl")):
        log.append(rich(who, decision_id=decision_id))
    log.append_operation(
        OperationRecord(
            operation_id="op-1", operation="erasure", performed_at=T0, code_version="test"
        )
    )
    exported = {e["seq"]: e for e in log.export()}
    stored = rows(engine)
    assert len(stored) == 3
    for row in stored:
        assert row.leaf_hash is not None
        assert bytes(row.leaf_hash) == outside.leaf_hash(outside.record_leaf(exported[row.seq]))


def test_a_log_made_before_leaf_hashes_gains_the_column_and_still_verifies(
    log: AuditLog, engine: Engine
) -> None:
    for _ in range(2):
        log.append(record())
    with engine.begin() as connection:  # the table as an earlier release made it
        connection.exec_driver_sql("ALTER TABLE audit_log DROP COLUMN leaf_hash")
    again = other_engine(engine)
    try:
        later = AuditLog(again)
        later.append(record())
        assert [r.leaf_hash is None for r in rows(again)] == [True, True, False]
        assert later.verify().ok
    finally:
        again.dispose()


def test_a_changed_leaf_hash_alone_is_found(log: AuditLog) -> None:
    for _ in range(3):
        log.append(record())
    _set(2, "leaf_hash", lambda row: bytes(32))(log.engine)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "leaf_hash" in (result.problem or "")


def test_an_untouched_log_always_verifies(log: AuditLog) -> None:
    customers = ["C1", "C0012345", "Zoë-7", "a.b:c_d-e", "x" * 64]
    for i in range(60):
        who = customers[i % len(customers)]
        log.append(rich(who) if i % 2 else record(who, trigger={"n": i, "ünï": "cödé"}))
        if i % 13 == 0:
            log.checkpoint()
            assert log.verify().ok
    result = log.verify(checkpoint=log.checkpoint())
    assert result.ok and result.records == 60 and result.checkpoints >= 5
    assert verify_export(log.export()).ok


# --- tampering: every column, every position, every kind; with and without a checkpoint ---

N = 6


@dataclass(frozen=True)
class Tampering:
    name: str
    act: Callable[[Engine], None]
    #: The first bad seq verify() must name (given the tampered log), or None when the chain
    #: alone cannot show it and only a checkpoint does.
    found_at: int | None
    problem: str = ""


def _row(connection: Any, seq: int) -> Any:
    return connection.execute(select(audit_log).where(audit_log.c.seq == seq)).one()


def _set(seq: int, column: str, change: Callable[[Any], Any]) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        with engine.begin() as connection:
            row = _row(connection, seq)
            connection.execute(
                update(audit_log).where(audit_log.c.seq == seq).values({column: change(row)})
            )

    return act


def _delete(*seqs: int) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        with engine.begin() as connection:
            connection.execute(delete(audit_log).where(audit_log.c.seq.in_(seqs)))

    return act


def _move(seq: int, to: int) -> Callable[[Engine], None]:
    return _set(seq, "seq", lambda _row: to)


def _swap(a: int, b: int, columns: tuple[str, ...]) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        with engine.begin() as connection:
            first, second = _row(connection, a), _row(connection, b)
            if columns == ("seq",):  # through a free seq: seq is the primary key
                connection.execute(update(audit_log).where(audit_log.c.seq == a).values(seq=-1))
                connection.execute(update(audit_log).where(audit_log.c.seq == b).values(seq=a))
                connection.execute(update(audit_log).where(audit_log.c.seq == -1).values(seq=b))
                return
            # prev_hash and decision_id are unique: park the first row's values meanwhile.
            parked = {c: f"parked-{c}" for c in columns if c in ("prev_hash", "decision_id")}
            if parked:
                connection.execute(update(audit_log).where(audit_log.c.seq == a).values(parked))
            connection.execute(
                update(audit_log)
                .where(audit_log.c.seq == b)
                .values({c: getattr(first, c) for c in columns})
            )
            connection.execute(
                update(audit_log)
                .where(audit_log.c.seq == a)
                .values({c: getattr(second, c) for c in columns})
            )

    return act


def _forge(connection: Any, seq: int, prev: str, valid: bool) -> dict[str, Any]:
    decision = str(uuid.uuid4())
    at = T0 + timedelta(days=1)
    ref = "cref:" + "ab" * 16
    body = record("placeholder", decision_id=decision, customer_ref=ref).model_dump_json()
    forged = hash_record(prev, seq, decision, timestamp(at), ref, body)
    return {
        "seq": seq,
        "decision_id": decision,
        "recorded_at": at,
        "customer_ref": ref,
        "prev_hash": prev,
        "record_hash": forged if valid else "sha256:" + "9" * 64,
        "body": body,
        "leaf_hash": record_leaf_hash(seq, decision, timestamp(at), ref, body),
    }


def _append_forged(valid: bool) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        with engine.begin() as connection:
            head = _row(connection, N)
            connection.execute(
                insert(audit_log).values(_forge(connection, N + 1, head.record_hash, valid))
            )

    return act


def _shift_up(connection: Any, start: int) -> None:
    """Renumber records ``start``.. one up, through negative seqs (seq is the primary key)."""
    connection.execute(
        update(audit_log).where(audit_log.c.seq >= start).values(seq=-audit_log.c.seq - 1)
    )
    connection.execute(update(audit_log).where(audit_log.c.seq < 0).values(seq=-audit_log.c.seq))


def _splice(at: int, rechain: bool) -> Callable[[Engine], None]:
    """Insert a well-formed record at ``at``, relinking the next one; with ``rechain`` the
    forger also recomputes every later hash, so the chain alone holds together."""

    def act(engine: Engine) -> None:
        with engine.begin() as connection:
            before = _row(connection, at - 1).record_hash
            _shift_up(connection, at)
            connection.execute(
                update(audit_log).where(audit_log.c.seq == at + 1).values(prev_hash="parked")
            )
            forged = _forge(connection, at, before, valid=True)
            connection.execute(insert(audit_log).values(forged))
            connection.execute(
                update(audit_log)
                .where(audit_log.c.seq == at + 1)
                .values(prev_hash=forged["record_hash"])
            )
        if rechain:
            _rechain(engine, at + 1)

    return act


def _rechain(engine: Engine, start: int) -> None:
    """What a forger with write access does after a change: recompute every hash from
    ``start`` on, leaf hashes too (prev_hash is unique, so in two passes)."""
    with engine.begin() as connection:
        stored = list(
            connection.execute(
                select(audit_log).where(audit_log.c.seq >= start).order_by(audit_log.c.seq)
            )
        )
        prev = _row(connection, start - 1).record_hash
        connection.execute(
            update(audit_log)
            .where(audit_log.c.seq >= start)
            .values(prev_hash="parked-" + audit_log.c.decision_id)
        )
        for row in stored:
            at = timestamp(row.recorded_at)
            new = hash_record(prev, row.seq, row.decision_id, at, row.customer_ref, row.body)
            leaf = record_leaf_hash(row.seq, row.decision_id, at, row.customer_ref, row.body)
            connection.execute(
                update(audit_log)
                .where(audit_log.c.seq == row.seq)
                .values(prev_hash=prev, record_hash=new, leaf_hash=leaf)
            )
            prev = new


def _edit_and_rechain(seq: int) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        _set(seq, "body", lambda row: row.body.replace("nothing_to_deliver", "delivered"))(engine)
        _rechain(engine, seq)

    return act


def _changes() -> Iterator[Tampering]:
    """Each column changed on the first, a middle and the last record."""
    edits: dict[str, Callable[[Any], Any]] = {
        "body": lambda row: row.body.replace("nothing_to_deliver", "delivered"),
        "body_whitespace": lambda row: row.body + " ",
        "decision_id": lambda row: str(uuid.uuid4()),
        "recorded_at": lambda row: row.recorded_at + timedelta(microseconds=1),
        "customer_ref": lambda row: "cref:" + "0" * 32,
        "prev_hash": lambda row: "sha256:" + "f" * 64,
        "record_hash": lambda row: "sha256:" + "e" * 64,
    }
    for (name, edit), (where, seq) in itertools.product(
        edits.items(), (("first", 1), ("middle", 3), ("last", N))
    ):
        column = "body" if name.startswith("body") else name
        problem = "prev_hash" if column == "prev_hash" else "record_hash"
        yield Tampering(f"{name}-{where}", _set(seq, column, edit), seq, problem)
    for where, seq in (("first", 1), ("middle", 3), ("last", N)):
        # The record is gone from its place: the next one shows the gap (or, moved last,
        # itself).
        yield Tampering(
            f"seq-{where}", _move(seq, seq + 1000), seq + (1000 if seq == N else 1), "gap"
        )


TAMPERINGS: list[Tampering] = [
    *_changes(),
    Tampering("delete-first", _delete(1), 2, "gap"),
    Tampering("delete-middle", _delete(3), 4, "gap"),
    Tampering("delete-last", _delete(N), None),
    Tampering("truncate-tail", _delete(N - 1, N), None),
    Tampering("truncate-all", _delete(*range(1, N + 1)), None),
    Tampering("insert-bogus-at-tail", _append_forged(valid=False), N + 1, "record_hash"),
    Tampering("insert-spliced-in-middle", _splice(3, rechain=False), 4, "record_hash"),
    Tampering("insert-spliced-and-rechained", _splice(3, rechain=True), None),
    Tampering("swap-seqs", _swap(3, 4, ("seq",)), 3, "prev_hash"),
    Tampering("swap-bodies", _swap(3, 4, ("body",)), 3, "record_hash"),
    Tampering(
        "swap-all-but-seq",
        _swap(
            3, 4, ("decision_id", "recorded_at", "customer_ref", "prev_hash", "record_hash", "body")
        ),
        3,
        "prev_hash",
    ),
    Tampering("swap-first-two", _swap(1, 2, ("seq",)), 1, "prev_hash"),
    Tampering("edit-and-rechain", _edit_and_rechain(3), None),
]


@pytest.fixture
def populated(log: AuditLog) -> tuple[AuditLog, Checkpoint]:
    for i in range(N):
        log.append(record(f"C{i % 2}") if i % 3 else rich(f"C{i % 2}"))
    return log, log.checkpoint()


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=lambda t: t.name)
def test_tampering_is_found_and_the_first_bad_record_named(
    populated: tuple[AuditLog, Checkpoint], tampering: Tampering
) -> None:
    log, kept = populated
    with log.engine.begin() as connection:  # the checkpoint as an outside party keeps it
        connection.execute(delete(audit_checkpoints))
    tampering.act(log.engine)

    chain = log.verify()
    if tampering.found_at is None:
        # Cutting off the tail, or rewriting history with every hash recomputed, leaves a
        # valid chain: that is what checkpoints are for.
        assert chain.ok
    else:
        assert not chain.ok
        assert chain.first_bad_seq == tampering.found_at
        with log.engine.connect() as connection:
            stored = connection.execute(
                select(audit_log.c.decision_id).where(audit_log.c.seq == chain.first_bad_seq)
            ).scalar()
        assert chain.first_bad_decision == stored
        assert tampering.problem in (chain.problem or "")

    against = log.verify(checkpoint=kept)
    assert not against.ok, against
    assert against.checkpoints == 1


def test_verification_stops_at_the_first_bad_record(
    populated: tuple[AuditLog, Checkpoint],
) -> None:
    log, _ = populated
    second = rows(log.engine)[1]
    _set(3, "body", lambda row: row.body + " ")(log.engine)
    _set(5, "record_hash", lambda row: "sha256:" + "e" * 64)(log.engine)
    result = log.verify()
    assert (result.ok, result.records, result.first_bad_seq) == (False, 2, 3)
    assert result.head_hash == second.record_hash  # the last record that held


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=lambda t: t.name)
def test_a_stored_checkpoint_also_catches_it(
    populated: tuple[AuditLog, Checkpoint], tampering: Tampering
) -> None:
    log, _ = populated
    tampering.act(log.engine)
    assert not log.verify().ok


def test_a_cut_tail_is_named_against_the_checkpoint(populated: tuple[AuditLog, Checkpoint]) -> None:
    log, kept = populated
    _delete(N - 1, N)(log.engine)
    result = log.verify(checkpoint=kept)
    assert not result.ok and result.records == N - 2 and result.first_bad_seq == N - 1
    assert result.problem is not None and result.problem.startswith("truncated")
    assert f"record {N}" in result.problem


def test_a_checkpoint_of_another_log_does_not_verify(
    populated: tuple[AuditLog, Checkpoint], tmp_path
) -> None:
    log, _ = populated
    other = AuditLog(connect(f"sqlite:///{tmp_path / 'other.db'}"))
    for _ in range(N):
        other.append(record())
    foreign = other.checkpoint()
    result = log.verify(checkpoint=foreign)
    assert not result.ok and result.first_bad_seq == N and "checkpoint" in (result.problem or "")
    other.engine.dispose()


# --- group commit ---


def test_concurrent_appends_make_one_chain_in_shared_transactions(
    log: AuditLog, engine: Engine
) -> None:
    appended = hammer([log], threads=8, each=40)
    assert_one_chain(engine, log, appended)
    stats = log.stats
    assert stats.appends == 320
    assert stats.transactions < stats.appends  # callers shared transactions
    assert 1 < stats.largest_group <= 8


def test_two_logs_on_separate_engines_keep_one_chain(log: AuditLog, engine: Engine) -> None:
    second = AuditLog(other_engine(engine))
    appended = hammer([log, second], threads=6, each=30)
    assert_one_chain(engine, log, appended)
    second.engine.dispose()


def test_a_group_is_at_most_max_batch(engine: Engine) -> None:
    log = AuditLog(engine, max_batch=3)
    appended = hammer([log], threads=8, each=15)
    assert_one_chain(engine, log, appended)
    assert log.stats.largest_group <= 3


def test_when_the_transaction_fails_every_caller_gets_audit_write_failed(
    engine: Engine,
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    impatient = create_engine(url, connect_args={"timeout": 0.2, "check_same_thread": False})
    log = AuditLog(impatient)
    outcomes: list[Any] = []
    guard = threading.Lock()
    blocker = engine.raw_connection()
    blocker.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock

    def write() -> None:
        try:
            result: Any = log.append(record())
        except AuditWriteFailed as error:
            result = error
        with guard:
            outcomes.append(result)

    workers = [threading.Thread(target=write) for _ in range(5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    blocker.rollback()
    blocker.close()

    assert len(outcomes) == 5
    assert all(isinstance(o, AuditWriteFailed) for o in outcomes), outcomes
    assert {o.code for o in outcomes} == {"audit_unavailable"}
    assert rows(engine) == []  # nothing half-written
    after = log.append(record())
    assert after.seq == 1 and log.verify().ok
    impatient.dispose()


def test_a_repeated_decision_fails_alone(log: AuditLog, engine: Engine) -> None:
    first = record()
    log.append(first)
    failures: list[DuplicateDecision] = []
    barrier = threading.Barrier(6)

    def write(n: int) -> None:
        barrier.wait()
        for _ in range(10):
            try:
                log.append(first if n == 0 else record())
            except DuplicateDecision as error:
                failures.append(error)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(failures) == 10 and all(f.code == "duplicate_decision" for f in failures)
    assert len(rows(engine)) == 1 + 50 and log.verify().ok


def test_append_many_writes_in_order_in_one_transaction(log: AuditLog, engine: Engine) -> None:
    log.append(record())
    batch = [rich(f"C{i}") for i in range(5)]
    done = log.append_many(batch)
    assert [d.seq for d in done] == [2, 3, 4, 5, 6]
    assert [d.decision_id for d in done] == [r.decision_id for r in batch]
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(done))
    assert log.stats.transactions == 2 and log.stats.appends == 6
    assert log.append_many([]) == [] and log.verify().ok


def test_append_many_is_all_or_nothing(log: AuditLog, engine: Engine) -> None:
    leaky = record("C7", trigger={"customer": "C7"})
    with pytest.raises(ValueError, match="customer's id"):
        log.append_many([record("C1"), leaky, record("C2")])
    first = record()
    log.append(first)
    with pytest.raises(DuplicateDecision):
        log.append_many([record(), first])
    assert len(rows(engine)) == 1
    assert key_count(engine, "C1") == 1  # made by the append, not the refused batches
    with pytest.raises(ValueError, match="one customer id per record"):
        log.append_many([record()], customer_ids=["C1", "C2"])


# --- pseudonyms ---


def test_records_name_customers_only_by_pseudonym(log: AuditLog, engine: Engine) -> None:
    mine = log.append(rich("C0012345"))
    again = log.append(rich("C0012345"))
    other = log.append(rich("C0012346"))
    assert mine.customer_ref == again.customer_ref != other.customer_ref
    assert mine.customer_ref.startswith("cref:") and len(mine.customer_ref) == 37
    for row in rows(engine):
        assert "C0012345" not in row.body and "C0012346" not in row.body
        body = json.loads(row.body)
        assert body["customer_ref"] == row.customer_ref
        assert [c["customer_id"] for c in body["consents_relied_on"]] == [row.customer_ref]
    with engine.connect() as connection:
        key = connection.execute(
            select(customer_keys.c.key).where(customer_keys.c.customer_id == "C0012345")
        ).scalar_one()
    assert pseudonym(key, "C0012345") == mine.customer_ref == log.pseudonym_of("C0012345")


def test_the_customer_id_can_be_passed_apart_from_the_record(log: AuditLog) -> None:
    done = log.append(record("-"), customer_id="C0099999")
    assert done.customer_ref == log.pseudonym_of("C0099999")
    assert log.get(done.decision_id)["record"]["customer_ref"] == done.customer_ref  # type: ignore[index]


@pytest.mark.parametrize(
    "leak",
    [
        {"trigger": {"kind": "event", "key": "C0012345"}},
        {"trigger": {"note": "customer c0012345 called"}},
        {"trigger": {"context": {"page": "/customers/C0012345/overview"}}},
        {"trigger": {"kafka": {"keys": ["C0012345"]}}},
    ],
    ids=["trigger-value", "lowercase-in-text", "inside-a-path", "in-a-list"],
)
def test_a_record_still_carrying_the_customer_id_is_refused(
    log: AuditLog, engine: Engine, leak: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="carries the customer's id"):
        log.append(rich("C0012345", **leak))
    assert rows(engine) == [] and key_count(engine) == 0


def test_the_id_is_not_mistaken_inside_longer_words_or_numbers(log: AuditLog) -> None:
    # C1's id appears only inside other tokens; that is not this customer's id.
    done = log.append(
        record("C1", trigger={"other": "C12", "hash": "ffc1ff", "n": 1, "x": "AC1"}),
    )
    assert done.seq == 1
    assert mentions('{"a":"C1"}', "C1") and mentions('{"a":"x c1."}', "C1")
    assert not mentions('{"a":"C12","b":"aC1"}', "C1")


def test_consents_of_another_customer_or_a_pseudonym_as_id_are_refused(log: AuditLog) -> None:
    theirs = rich("C0000002").consents_relied_on
    with pytest.raises(ValueError, match="another's consent"):
        log.append(rich("C0000001", consents_relied_on=theirs))
    with pytest.raises(ValueError, match="not a pseudonym"):
        log.append(record("cref:" + "0" * 32))
    with pytest.raises(ValueError, match="1 to 64"):
        log.append(record("x" * 65))


def test_a_new_customers_key_is_made_once_under_a_race(log: AuditLog, engine: Engine) -> None:
    second = AuditLog(other_engine(engine))
    appended = hammer([log, second], threads=8, each=10, customers=1)
    assert key_count(engine) == 1
    assert {r.customer_ref for r in rows(engine)} == {log.pseudonym_of("C0000000")}
    assert_one_chain(engine, log, appended)
    second.engine.dispose()


# --- erasure ---


def test_forgetting_a_customer_unties_their_records_and_keeps_the_chain(
    log: AuditLog, engine: Engine
) -> None:
    gone = [log.append(rich("C0012345")) for _ in range(3)]
    kept = [log.append(rich("C0054321")) for _ in range(2)]
    assert len(list(log.export("C0012345"))) == 3

    assert log.forget("C0012345") is True
    assert log.forget("C0012345") is False  # nothing left to forget

    assert log.verify().ok
    assert list(log.export("C0012345")) == [] and log.pseudonym_of("C0012345") is None
    assert [e["seq"] for e in log.export("C0054321")] == [k.seq for k in kept]
    assert key_count(engine, "C0012345") == 0
    for row in rows(engine):
        for value in row:
            assert not mentions(json.dumps(str(value)), "C0012345"), value
    # The records stay, under a pseudonym nobody can tie to the customer any more.
    assert log.get(gone[0].decision_id)["customer_ref"] == gone[0].customer_ref  # type: ignore[index]


def test_a_customer_who_comes_back_gets_a_new_key(log: AuditLog) -> None:
    before = log.append(rich("C0012345"))
    log.forget("C0012345")
    after = log.append(rich("C0012345"))
    assert after.customer_ref != before.customer_ref
    assert [e["decision_id"] for e in log.export("C0012345")] == [after.decision_id]
    assert log.verify().ok


def test_erasure_commits_or_rolls_back_with_the_callers_other_deletions(
    log: AuditLog, engine: Engine
) -> None:
    log.append(rich("C0012345"))
    with engine.begin() as connection:
        connection.execute(
            insert(consent_history).values(
                customer_id="C0012345",
                purpose="marketing",
                channel="sms",
                granted=True,
                recorded_at=T0,
                source="test",
                notice_version="1",
            )
        )

    class Abort(Exception):
        pass

    with pytest.raises(Abort), engine.begin() as connection:
        assert erase_customer_key(connection, "C0012345")
        connection.execute(
            delete(consent_history).where(consent_history.c.customer_id == "C0012345")
        )
        raise Abort
    assert key_count(engine, "C0012345") == 1 and len(list(log.export("C0012345"))) == 1

    with engine.begin() as connection:
        erase_customer_key(connection, "C0012345")
        connection.execute(
            delete(consent_history).where(consent_history.c.customer_id == "C0012345")
        )
    assert key_count(engine, "C0012345") == 0 and list(log.export("C0012345")) == []
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(consent_history)).scalar() == 0


def test_erasure_racing_appends_leaves_a_valid_chain(log: AuditLog, engine: Engine) -> None:
    stop = threading.Event()
    forgotten: list[bool] = []

    def erase() -> None:
        while not stop.is_set():
            forgotten.append(log.forget("C0000000"))

    eraser = threading.Thread(target=erase)
    eraser.start()
    try:
        appended = hammer([log], threads=4, each=15, customers=1)
    finally:
        stop.set()
        eraser.join()
    assert_one_chain(engine, log, appended)
    assert key_count(engine) <= 1 and any(forgotten)
    current = log.pseudonym_of("C0000000")
    exported = {e["decision_id"] for e in log.export("C0000000")}
    assert exported == {r.decision_id for r in rows(engine) if r.customer_ref == current}


# --- checkpoints ---


def test_checkpoints_are_stored_listed_and_travel_as_json(log: AuditLog) -> None:
    empty = log.checkpoint()
    assert (empty.seq, empty.head_hash, empty.records) == (0, GENESIS, 0)
    assert log.verify(checkpoint=empty).ok
    for _ in range(3):
        head = log.append(record())
    taken = log.checkpoint()
    assert (taken.seq, taken.head_hash, taken.records) == (3, head.record_hash, 3)
    assert taken.taken_at.tzinfo is not None
    assert log.checkpoint() == taken  # the same head is one checkpoint
    assert log.checkpoints() == [empty, taken]
    kept = json.loads(taken.to_json())
    assert kept["seq"] == 3 and kept["head_hash"] == head.record_hash
    assert Checkpoint.from_json(taken.to_json()) == taken
    assert log.verify(checkpoint=Checkpoint.from_json(taken.to_json())).ok
    with pytest.raises(ValueError, match="time zone"):
        Checkpoint.from_dict({**kept, "taken_at": "2026-11-01T09:00:00"})


def test_a_forged_genesis_checkpoint_fails(log: AuditLog) -> None:
    log.append(record())
    bogus = Checkpoint(0, "sha256:" + "1" * 64, 0, T0)
    result = log.verify(checkpoint=bogus)
    assert not result.ok and result.first_bad_seq == 0


# --- reading ---


def test_get(log: AuditLog) -> None:
    mine = rich("C7")
    done = log.append(mine)
    entry = log.get(mine.decision_id)
    assert entry is not None
    assert entry["seq"] == 1 and entry["record_hash"] == done.record_hash
    assert entry["record"]["decision_id"] == mine.decision_id
    assert entry["record"]["customer_ref"] == done.customer_ref
    assert entry["recorded_at"] == timestamp(done.recorded_at)
    assert log.get("nope") is None


def test_export_by_customer_and_time_streams_in_batches(log: AuditLog, engine: Engine) -> None:
    done = [log.append(rich("C7" if i % 2 else "C8")) for i in range(9)]
    everything = list(log.export(batch=2))
    assert [e["seq"] for e in everything] == list(range(1, 10))
    assert json.loads(json.dumps(everything)) == everything  # JSON-able
    assert verify_export(everything).ok

    mine = [d.seq for d in done if d.customer_ref == log.pseudonym_of("C7")]
    assert [e["seq"] for e in log.export("C7", batch=2)] == mine == [2, 4, 6, 8]

    since, until = done[2].recorded_at, done[6].recorded_at
    assert [e["seq"] for e in log.export(since=since, until=until, batch=2)] == [3, 4, 5, 6]
    assert [e["seq"] for e in log.export("C7", since=since, until=until)] == [4, 6]
    zurich = since.astimezone(ZoneInfo("Europe/Zurich"))
    assert [e["seq"] for e in log.export(since=zurich, until=until)] == [3, 4, 5, 6]

    assert list(log.export("C0000404")) == [] and key_count(engine, "C0000404") == 0
    with pytest.raises(ValueError, match="time zone"):
        log.export(since=datetime(2026, 11, 1))
    light = next(log.export(with_body=False))
    assert "body" not in light and light["record"]["decision_id"] == done[0].decision_id


def test_a_changed_export_does_not_verify(log: AuditLog) -> None:
    for _ in range(4):
        log.append(rich())
    exported = list(log.export())
    exported[2] = {**exported[2], "body": exported[2]["body"].replace("0.4123456789", "0.9")}
    result = verify_export(exported)
    assert not result.ok and result.first_bad_seq == 3
    assert not verify_export(exported[:1] + exported[2:]).ok  # a record left out


def test_an_id_that_is_also_a_word_of_the_record_is_written(log: AuditLog) -> None:
    """Only the trigger comes from outside; an id like a need or channel name is no leak."""
    for customer in ("protection", "rm", "0"):
        appended = log.append(rich(customer))
        assert appended.customer_ref.startswith("cref:")


# --- operation records (no customer) ---


def operation(**details: Any) -> OperationRecord:
    """A batch run's record (the integration tests use it too)."""
    return OperationRecord(
        operation_id=f"batch_score-{uuid.uuid4()}",
        operation="batch_score",
        performed_at=datetime.now(UTC),
        code_version="test",
        details={"customers_scored": 3, **details},
    )


def test_an_operation_record_joins_the_chain_and_names_nobody(
    log: AuditLog, engine: Engine
) -> None:
    first = log.append(rich("C0012345"))
    done = log.append_operation(operation(output_sha256="sha256:" + "a" * 64))
    last = log.append(record("C0012345"))
    assert (first.seq, done.seq, last.seq) == (1, 2, 3)
    assert done.prev_hash == first.record_hash and last.prev_hash == done.record_hash
    assert done.customer_ref == OPERATION_REF and key_count(engine) == 1
    result = log.verify()
    assert result.ok and result.records == 3
    stored = log.get(done.decision_id)
    assert stored is not None and is_operation(stored["record"])
    assert stored["record"]["details"]["output_sha256"] == "sha256:" + "a" * 64
    # A customer's export never holds it; the whole log's export verifies with it.
    assert [e["seq"] for e in log.export("C0012345")] == [1, 3]
    assert verify_export(log.export()).ok
    # Changing its body is found like any other record's.
    with engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 2).values(body=rows(engine)[1].body + " ")
        )
    assert log.verify().first_bad_seq == 2


def test_an_operation_id_is_written_once(log: AuditLog) -> None:
    once = operation()
    log.append_operation(once)
    with pytest.raises(DuplicateDecision):
        log.append_operation(once)
    assert log.verify().records == 1


def test_operations_and_decisions_from_threads_make_one_chain(
    log: AuditLog, engine: Engine
) -> None:
    ops: list[str] = []

    def operate() -> None:
        for _ in range(10):
            ops.append(log.append_operation(operation()).decision_id)

    worker = threading.Thread(target=operate)
    worker.start()
    appended = hammer([log], threads=3, each=20)
    worker.join()
    assert_one_chain(engine, log, appended + ops)


def test_a_replay_of_the_log_skips_operation_records(log: AuditLog) -> None:
    from consent.rules.catalog import Catalog
    from consent.rules.policy import Policy
    from consent.rules.simulate import replay

    log.append(record())
    log.append_operation(operation())
    report = replay((e["record"] for e in log.export()), Policy.load(), Catalog.load())
    assert report.decisions == 1
