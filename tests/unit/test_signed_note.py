"""Checkpoints as signed notes: the reference implementation's signature reproduced byte for
byte, and a checkpoint and an inclusion proof checked end to end by the stand-alone verifier run
as a copied file."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consent import verify_audit as v
from consent.rules.merkle import Tree, leaf_hash
from consent.rules.signed_note import Signer, checkpoint_text

ROOT = Path(__file__).resolve().parents[2]
# golang.org/x/mod/sumdb/note, note_test.go: the example signer key, text and signed note.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_signing_reproduces_the_reference_note_byte_for_byte() -> None:
    signer = Signer.parse(GO_SIGNER_KEY)
    assert signer.sign(GO_TEXT) == GO_TEXT + "\n" + GO_SIGNATURE
    assert signer.encoded() == GO_SIGNER_KEY
    assert signer.verifier_key() == GO_VERIFIER_KEY


@pytest.mark.parametrize(
    "bad",
    [
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+Peter Neumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1",
    ],
)
def test_malformed_signer_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        Signer.parse(bad)


def test_a_checkpoint_and_a_record_proved_by_the_copied_verifier(tmp_path: Path) -> None:
    signer = Signer.generate("nextbest.example/audit")
    records: list[dict[str, Any]] = [
        {
            "seq": seq,
            "decision_id": f"D{seq}",
            "recorded_at": "2026-12-07T09:00:00.000000Z",
            "customer_ref": "cref:00112233445566778899aabbccddeeff",
            "body": json.dumps({"decision": seq, "note": "caf\u00e9"}, ensure_ascii=False),
        }
        for seq in range(1, 12)
    ]
    tree = Tree(leaf_hash(v.record_leaf(r)) for r in records)
    note = signer.sign(checkpoint_text("nextbest.example/audit", 11, tree.root()))
    copy = tmp_path / "verify_audit.py"
    copy.write_text((ROOT / "consent" / "verify_audit.py").read_text())

    def run(what: str, document: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / f"{what}.txt"
        path.write_text(document)
        return subprocess.run(
            [sys.executable, str(copy), what, str(path), "--key", signer.verifier_key()],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )

    assert run("checkpoint", note).returncode == 0
    proof: dict[str, Any] = {
        "record": records[6],
        "leaf_index": 6,
        "tree_size": 11,
        "proof": [base64.b64encode(h).decode() for h in tree.inclusion_proof(6, 11)],
        "checkpoint": note,
    }
    ok = run("inclusion", json.dumps(proof))
    assert ok.returncode == 0 and "record 7 (D7)" in ok.stdout
    # The record as stored, edited after the checkpoint: the proof no longer holds.
    edited = {**proof, "record": {**records[6], "body": records[6]["body"].replace("7", "8")}}
    assert run("inclusion", json.dumps(edited)).returncode == 1
    # A checkpoint signed by another key proves nothing.
    forged = Signer.generate("nextbest.example/audit").sign(
        checkpoint_text("nextbest.example/audit", 11, tree.root())
    )
    failed = run("inclusion", json.dumps({**proof, "checkpoint": forged}))
    assert failed.returncode == 1 and "no signature by" in failed.stderr


@pytest.mark.parametrize("text", ["no newline", "\nfirst line empty\n", "a\n\nblank inside\n"])
def test_only_a_text_of_non_empty_lines_is_signed(text: str) -> None:
    with pytest.raises(ValueError):
        Signer.generate("log").sign(text)


@pytest.mark.parametrize(
    ("origin", "size", "extensions"),
    [("", 1, ()), ("two\nlines", 1, ()), ("log", -1, ()), ("log", 1, ("",)), ("log", 1, ("a\nb",))],
)
def test_a_checkpoint_line_is_never_empty_nor_split(
    origin: str, size: int, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        checkpoint_text(origin, size, bytes(32), extensions)
