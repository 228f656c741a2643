"""Proofs from a live audit log, checked by the stand-alone verifier an auditor runs: inclusion
of records in published checkpoints and consistency between them, on SQLite and PostgreSQL, in
process, through the API and from the command line; each refused with one bit changed."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from consent import verify_audit as v
from consent.stores.audit.checkpointer import Checkpointer, CheckpointPolicy
from consent.stores.audit.log import AuditLog
from consent.stores.audit.proofs import Checkpoints, ProofRefused, Proofs
from consent.stores.audit.sinks import FolderSink
from consent.stores.tables import audit_log
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.cli import main
from tests.conftest import key_headers
from tests.integration.test_audit import record, rich
from tests.integration.test_audit_attacks import KEY, ORIGIN, SIGNER
from tests.tamper import unguarded

VERIFIER = Path(__file__).resolve().parents[2] / "consent" / "verify_audit.py"


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _flipped(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The proof with one bit changed in one of its hashes, or in the record's body when the
    proof has none (a tree of one record)."""
    changed: dict[str, Any] = json.loads(json.dumps(document))
    if changed["proof"]:
        at = rng.randrange(len(changed["proof"]))
        raw = base64.b64decode(changed["proof"][at])
        changed["proof"][at] = base64.b64encode(_flip(raw, rng.randrange(256))).decode()
    else:
        body = changed["record"]["body"].encode()
        changed["record"]["body"] = _flip(body, rng.randrange(len(body) * 8)).decode(
            errors="replace"
        )
    return changed


@pytest.fixture
def live(
    operational_engine: Engine, tmp_path: Path
) -> Iterator[tuple[AuditLog, Proofs, list[int]]]:
    """A log of 1,200 records written in groups of varied size, with a checkpoint published
    after each group: about a hundred checkpoints of sizes of every shape."""
    sink = FolderSink(tmp_path / "checkpoints")
    checkpointer = Checkpointer(
        operational_engine, lambda: SIGNER, CheckpointPolicy(ORIGIN), [sink]
    )
    log = AuditLog(operational_engine, checkpointer=checkpointer)
    rng = random.Random(7)
    sizes, written = [], 0
    while written < 1200:
        group = min(rng.choice([1, 2, 3, 7, 8, 9, 16, 17, 31]), 1200 - written)
        log.append_many([rich(f"C{(written + i) % 40}") for i in range(group)])
        written += group
        sizes.append(checkpointer.publish()[-1].size)
    proofs = Proofs(operational_engine, Checkpoints([sink], lambda: [KEY], ORIGIN))
    yield log, proofs, sizes
    log.close()


def test_1000_inclusion_and_100_consistency_proofs_verify_and_fail_with_a_bit_flipped(
    live: tuple[AuditLog, Proofs, list[int]],
) -> None:
    log, proofs, sizes = live
    rng = random.Random(11)
    ids = {e["seq"]: e["decision_id"] for e in log.export(with_body=False)}
    assert len(ids) == 1200 and len(sizes) > 90
    for _ in range(1000):
        size = rng.choice(sizes)
        seq = rng.randint(1, size)
        proof = proofs.inclusion(ids[seq], size)
        assert v.check_inclusion(proof, KEY).startswith(f"record {seq} ")
        with pytest.raises(v.VerificationError):
            v.check_inclusion(_flipped(proof, rng), KEY)
    for _ in range(100):
        old, new = sorted(rng.sample(sizes, 2))
        proof = proofs.consistency(old, new)
        assert v.check_consistency(proof, KEY).startswith(f"the log of {new} records extends")
        at = rng.randrange(len(proof["proof"]))
        raw = base64.b64decode(proof["proof"][at])
        proof["proof"][at] = base64.b64encode(_flip(raw, rng.randrange(256))).decode()
        with pytest.raises(v.VerificationError):
            v.check_consistency(proof, KEY)
    assert proofs.rebuilt is not None and proofs.rebuilt.records == 1200


def test_the_tree_follows_the_log_after_it_was_built(
    live: tuple[AuditLog, Proofs, list[int]],
) -> None:
    log, proofs, _ = live
    proofs.tree()
    later = log.append(record("C-later"))
    assert log.checkpointer is not None
    size = log.checkpointer.publish()[-1].size
    assert v.check_inclusion(proofs.inclusion(later.decision_id, size), KEY)


def test_no_proof_is_given_for_a_log_changed_under_its_checkpoint(
    live: tuple[AuditLog, Proofs, list[int]],
) -> None:
    log, proofs, sizes = live
    first = next(iter(log.export(with_body=False)))["decision_id"]
    unguarded(log.engine)
    with log.engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 5).values(leaf_hash=bytes(32))
        )
    with pytest.raises(ProofRefused, match="does not give the root") as refused:
        proofs.inclusion(first, sizes[-1])
    assert refused.value.code == "log_differs"
    with pytest.raises(ProofRefused) as unknown:
        proofs.inclusion(first, sizes[-1] + 1000)
    assert unknown.value.code == "no_checkpoint"
    with pytest.raises(ProofRefused) as missing:
        proofs.inclusion("no-such-decision")
    assert missing.value.code == "not_found"


# --- through the API and the command line, on the embedded defaults ---


@pytest.fixture
def api(embedded: Container) -> Iterator[tuple[Container, TestClient]]:
    with TestClient(create_app(embedded)) as client:
        yield embedded, client


def test_the_api_proves_a_decision_and_a_later_checkpoint(
    api: tuple[Container, TestClient], tmp_path: Path
) -> None:
    container, client = api
    compliance = key_headers(container, "compliance")
    first = container.audit.append(record("C1"))
    proof = client.get(f"/v1/audit/decisions/{first.decision_id}/proof", headers=compliance)
    assert proof.status_code == 200, proof.text  # no checkpoint held it yet: one was signed
    for _ in range(4):
        container.audit.append(record("C2"))
    assert container.audit.checkpointer is not None
    container.audit.checkpointer.publish()  # as it would on its own within the interval
    later = client.get(f"/v1/audit/decisions/{first.decision_id}/proof", headers=compliance)
    assert later.status_code == 200 and later.json()["tree_size"] == 5
    consistency = client.get("/v1/audit/consistency?from=1&to=5", headers=compliance)
    assert consistency.status_code == 200, consistency.text

    # What an auditor does: the answers saved, checked by a copy of the verifier alone.
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copy(VERIFIER, auditor / "verify_audit.py")
    key = container.audit_signer.verifier_key()
    for name, document, what in (
        ("proof.json", later.json(), "inclusion"),
        ("consistency.json", consistency.json(), "consistency"),
    ):
        (auditor / name).write_text(json.dumps(document))
        checked = subprocess.run(
            [sys.executable, "verify_audit.py", what, name, "--key", key],
            cwd=auditor,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0 and checked.stdout.startswith("OK: "), checked.stderr

    backwards = client.get("/v1/audit/consistency?from=5&to=1", headers=compliance)
    assert backwards.status_code == 404 and "larger checkpoint" in backwards.text
    missing = client.get("/v1/audit/consistency?from=1&to=4", headers=compliance)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    unknown = client.get("/v1/audit/decisions/nope/proof", headers=compliance)
    assert unknown.status_code == 404
    verified = client.get("/v1/audit/verify", headers=compliance).json()
    assert (verified["ok"], verified["covered"], verified["rejected"]) == (True, 5, [])

    # The record changed after it was proved: no proof is given for what it says now.
    with container.engine.begin() as connection:
        connection.execute(
            update(audit_log).where(audit_log.c.seq == 1).values(body=audit_log.c.body + " ")
        )
    differs = client.get(f"/v1/audit/decisions/{first.decision_id}/proof", headers=compliance)
    assert differs.status_code == 409 and differs.json()["error"]["code"] == "conflict"


def test_the_command_line_prints_proofs_the_verifier_accepts(embedded: Container) -> None:
    env = {"NEXTBEST_HOME": str(embedded.settings.home)}
    done = [embedded.audit.append(record("C1")) for _ in range(3)]
    embedded.close_audit()  # the writing process shuts down: its checkpoint is published
    key = CliRunner().invoke(main, ["audit", "key"], env=env).output.strip()
    proof = CliRunner().invoke(main, ["audit", "proof", done[1].decision_id], env=env)
    assert proof.exit_code == 0, proof.output
    checked = v.check_inclusion(json.loads(proof.output), v.VerifierKey.parse(key))
    assert checked.startswith("record 2 ")
    for _ in range(2):
        embedded.audit.append(record("C2"))
    embedded.close_audit()
    consistency = CliRunner().invoke(
        main, ["audit", "consistency", "--from", "3", "--to", "5"], env=env
    )
    assert consistency.exit_code == 0, consistency.output
    assert v.check_consistency(json.loads(consistency.output), v.VerifierKey.parse(key))
    refused = CliRunner().invoke(
        main, ["audit", "consistency", "--from", "2", "--to", "5"], env=env
    )
    assert refused.exit_code == 1 and "no published checkpoint holds 2 records" in refused.output


def test_erasure_changes_no_leaf_and_every_proof_still_holds(
    live: tuple[AuditLog, Proofs, list[int]],
) -> None:
    """Records name customers by pseudonym only: shredding a customer's key leaves their
    records, their leaves and every proof as they were, and ties them to nobody."""
    log, proofs, sizes = live
    theirs = list(log.export("C7", with_body=False))
    assert theirs
    before = proofs.inclusion(theirs[0]["decision_id"], sizes[-1])
    assert log.forget("C7") is True
    assert list(log.export("C7")) == []  # no longer findable through the customer's id
    fresh = Proofs(log.engine, proofs.checkpoints)  # as a process started after the erasure
    assert fresh.inclusion(theirs[0]["decision_id"], sizes[-1]) == before
    assert v.check_inclusion(before, KEY)
    # The log goes on; the erased customer's record is in the newer checkpoint too.
    log.append(record("C7"))  # the customer back, under a new key
    assert log.checkpointer is not None
    newest = log.checkpointer.publish()[-1].size
    assert newest == sizes[-1] + 1
    proof = fresh.inclusion(theirs[0]["decision_id"], newest)
    assert proof["leaf_hash"] == before["leaf_hash"] and v.check_inclusion(proof, KEY)
