"""Someone with write access to the operational store against the audit log's signed
checkpoints, on SQLite and on real PostgreSQL. The checkpoints are the ones the writing process
published on its own (every few records, and after a few idle moments); the attacker rewrites
the database as a forger would, recomputing every hash and leaf they can, and verification
must name the first record that differs or the records that are missing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, update

from consent.rules.checkpoints import publish
from consent.rules.merkle import Frontier
from consent.rules.signed_note import Signer
from consent.stores.audit.checkpointer import Checkpointer, CheckpointPolicy
from consent.stores.audit.log import AuditLog
from consent.stores.audit.sinks import FolderSink
from consent.stores.tables import audit_log, customer_keys
from consent.verify_audit import VerifierKey
from service.usecases.audit_verification import AuditReport, verify_log
from tests.integration.test_audit import (
    _delete,
    _edit_and_rechain,
    _rechain,
    _set,
    _splice,
    _swap,
    hammer,
    record,
    rich,
)
from tests.tamper import unguarded

ORIGIN = "test.nextbest/audit"
RECORDS = 12
SIGNER = Signer.generate(ORIGIN)
KEY = VerifierKey.parse(SIGNER.verifier_key())
#: Publish every 5 records, or a moment after the last: the log's 12 records are covered by
#: checkpoints of 5, 10 and 12 without anyone asking.
POLICY = CheckpointPolicy(ORIGIN, every_records=5, every_seconds=0.2)


@dataclass
class Published:
    log: AuditLog
    sink: FolderSink
    checkpointer: Checkpointer

    def verify(self) -> AuditReport:
        return verify_log(self.log, [self.sink], [KEY], ORIGIN)


def covered(checkpointer: Checkpointer, size: int, within: float = 20.0) -> None:
    """Wait until the checkpointer has published a checkpoint of ``size`` records."""
    deadline = time.monotonic() + within
    while checkpointer.stats.size < size:
        assert time.monotonic() < deadline, checkpointer.stats
        time.sleep(0.02)


def writer(engine: Engine, folder: Path, policy: CheckpointPolicy = POLICY) -> Published:
    sink = FolderSink(folder)
    checkpointer = Checkpointer(engine, lambda: SIGNER, policy, [sink])
    return Published(AuditLog(engine, checkpointer=checkpointer), sink, checkpointer)


@pytest.fixture
def published(operational_engine: Engine, tmp_path: Path) -> Iterator[Published]:
    made = writer(operational_engine, tmp_path / "checkpoints")
    for i in range(RECORDS):
        made.log.append(rich(f"C{i % 3}") if i % 2 else record(f"C{i % 3}"))
    covered(made.checkpointer, RECORDS)
    yield made
    made.log.close()


def _shift_down(engine: Engine, after: int) -> None:
    """Renumber the records after ``after`` one down (a forger closing a gap)."""
    with engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq > after).values(seq=-audit_log.c.seq + 1)
        )
        connection.execute(
            update(audit_log).where(audit_log.c.seq < 0).values(seq=-audit_log.c.seq)
        )


def _delete_and_close_the_gap(seq: int) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        _delete(seq)(engine)
        _shift_down(engine, seq)
        _rechain(engine, seq)

    return act


def _reorder(a: int, b: int) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        _swap(a, b, ("seq",))(engine)
        _rechain(engine, a)

    return act


def _replace_everything(engine: Engine) -> None:
    """A consistent forgery: the whole log written again by the log's own code, other records."""
    with engine.begin() as connection:
        connection.execute(delete(audit_log))
        connection.execute(delete(customer_keys))
    forger = AuditLog(engine)
    for i in range(RECORDS + 3):
        forger.append(record(f"F{i}"))
    forger.close()


@dataclass(frozen=True)
class Attack:
    name: str
    act: Callable[[Engine], None]
    first_bad: int
    problem: str


ATTACKS = [
    Attack("edit", _set(4, "body", lambda r: r.body.replace("test", "tset")), 4, "record_hash"),
    Attack("edit-and-rechain", _edit_and_rechain(4), 4, "is not the record in the checkpoint"),
    Attack("delete-from-the-middle", _delete(4), 5, "gap: record 4 is missing"),
    Attack(
        "delete-from-the-middle-and-rechain",
        _delete_and_close_the_gap(4),
        4,
        "is not the record in the checkpoint",
    ),
    Attack("truncate-the-tail", _delete(11, 12), 11, "records 11 to 12 are missing"),
    Attack("reorder", _reorder(4, 5), 4, "is not the record in the checkpoint"),
    Attack("insert", _splice(4, rechain=True), 4, "is not the record in the checkpoint"),
    Attack("replace-the-whole-log", _replace_everything, 1, "is not the record in the checkpoint"),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_each_attack_on_checkpointed_records_is_found_and_named(
    published: Published, attack: Attack
) -> None:
    before = published.verify()
    assert before.ok and before.verification.covered == RECORDS
    assert before.verification.signed_checkpoints >= 1

    unguarded(published.log.engine)
    attack.act(published.log.engine)

    after = published.verify()
    assert not after.ok
    assert after.verification.first_bad_seq == attack.first_bad, after.as_dict()
    assert attack.problem in (after.verification.problem or ""), after.as_dict()


def test_a_rewritten_log_is_never_signed_again(published: Published, tmp_path: Path) -> None:
    """A process started after the forgery continues the tree from the newest publication,
    not from the forged database: what it signs still shows the forgery."""
    unguarded(published.log.engine)
    _replace_everything(published.log.engine)
    later = writer(published.log.engine, tmp_path / "checkpoints")
    later.log.append(record("C9"))
    later.log.close()
    report = later.verify()
    assert not report.ok and report.verification.first_bad_seq == 1


def test_a_cut_tail_is_refused_by_the_next_writer(published: Published, tmp_path: Path) -> None:
    unguarded(published.log.engine)
    _delete(*range(6, RECORDS + 1))(published.log.engine)
    later = writer(published.log.engine, tmp_path / "checkpoints")
    with pytest.raises(Exception, match="tail was cut off"):
        later.checkpointer.publish()
    assert later.checkpointer.stats.refused is not None


def test_a_checkpoint_signed_by_another_key_is_rejected(published: Published) -> None:
    """A forger without the signing key can only sign with their own: verification fails on
    it, naming the document."""
    forger = Signer.generate(ORIGIN)
    fake, _ = publish(forger, ORIGIN, Frontier(), [bytes(32)] * (RECORDS + 5), published_at())
    published.sink.publish(fake)
    report = published.verify()
    assert not report.ok and report.verification.ok
    assert any("no trusted key signed it" in r for r in report.published.rejected)


def test_a_checkpoint_of_another_log_is_rejected(published: Published, tmp_path: Path) -> None:
    other, _ = publish(SIGNER, "another.log/audit", Frontier(), [bytes(32)], published_at())
    published.sink.publish(other)
    report = published.verify()
    assert not report.ok
    assert any("another log" in r for r in report.published.rejected)


def test_a_damaged_checkpoint_file_is_reported(published: Published) -> None:
    (published.sink.folder / f"{99:020d}.json").write_text('{"format": "something else"}')
    report = published.verify()
    assert not report.ok
    assert any("00000000000000000099.json" in r for r in report.published.rejected)


def published_at() -> datetime:
    return datetime.now(UTC)


def test_no_false_alarm_under_concurrent_writers_and_verifiers(
    operational_engine: Engine, tmp_path: Path
) -> None:
    """Two processes' logs with a checkpointer each, eight writer threads, and verification
    running all along: every verification holds, and at the end every record is covered."""
    policy = CheckpointPolicy(ORIGIN, every_records=7, every_seconds=0.05)
    first = writer(operational_engine, tmp_path / "checkpoints", policy)
    second_engine = _other(operational_engine)
    second = writer(second_engine, tmp_path / "checkpoints", policy)
    alarms: list[AuditReport] = []
    checks = 0
    stop = threading.Event()

    def verify_all_along() -> None:
        nonlocal checks
        while not stop.is_set():
            report = first.verify()
            checks += 1
            if not report.ok:
                alarms.append(report)

    verifier = threading.Thread(target=verify_all_along)
    verifier.start()
    try:
        appended = hammer([first.log, second.log], threads=8, each=40)
    finally:
        stop.set()
        verifier.join()
    first.log.close()
    second.log.close()
    second_engine.dispose()
    final = first.verify()
    assert alarms == [] and checks > 0
    assert final.ok and final.verification.records == len(appended) == 320
    assert final.verification.covered == 320


def _other(engine: Engine) -> Engine:
    from consent.stores.store import connect

    return connect(engine.url.render_as_string(hide_password=False))
