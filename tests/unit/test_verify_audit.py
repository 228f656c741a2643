"""The stand-alone verifier an auditor is handed (``consent/verify_audit.py``): published test
vectors for the tree's proofs and for signed notes, and that it stands alone."""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consent import verify_audit as v

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "data" / "rfc9162"

# golang.org/x/mod/sumdb/note, note_test.go: the reference implementation's example key and note.
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _b(value: str | None) -> bytes:
    return base64.b64decode(value) if value is not None else b""


def _cases(kind: str) -> list[tuple[str, dict[str, Any]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(str(f.relative_to(VECTORS)), json.loads(f.read_text())) for f in files]


def test_the_vectors_are_all_there() -> None:
    inclusion, consistency = _cases("inclusion"), _cases("consistency")
    assert (len(inclusion), len(consistency)) == (98, 98)
    # Both kinds hold cases to accept and cases to refuse.
    for cases in (inclusion, consistency):
        assert {c["wantErr"] for _, c in cases} == {True, False}


@pytest.mark.parametrize(("name", "case"), _cases("inclusion"), ids=lambda x: str(x)[:60])
def test_inclusion_vectors(name: str, case: dict[str, Any]) -> None:
    proof = [_b(p) for p in case["proof"] or []]
    args = (_b(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b(case["root"]))
    if case["wantErr"]:
        with pytest.raises(v.VerificationError):
            v.verify_inclusion(*args)
    else:
        v.verify_inclusion(*args)


@pytest.mark.parametrize(("name", "case"), _cases("consistency"), ids=lambda x: str(x)[:60])
def test_consistency_vectors(name: str, case: dict[str, Any]) -> None:
    proof = [_b(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b(case["root1"]), _b(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(v.VerificationError):
            v.verify_consistency(*args)
    else:
        v.verify_consistency(*args)


def test_the_reference_signed_note_opens_and_a_changed_byte_does_not() -> None:
    key = v.VerifierKey.parse(GO_VERIFIER_KEY)
    assert key.key_id.hex() == "c74f20a3"
    assert v.open_note(GO_NOTE, key) == GO_TEXT
    for changed in (
        GO_NOTE.replace("cryptography", "cryptographY"),
        GO_NOTE.replace("x08go/ZJ", "x08go/ZK"),
    ):
        with pytest.raises(v.VerificationError):
            v.open_note(changed, key)
    other = GO_VERIFIER_KEY.replace("c74f20a3", "c74f20a4")
    with pytest.raises(v.VerificationError, match="id does not match"):
        v.VerifierKey.parse(other)


def test_it_imports_only_the_standard_library_and_cryptography() -> None:
    source = ROOT / "consent" / "verify_audit.py"
    allowed = set(sys.stdlib_module_names) | {"cryptography", "__future__"}
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert {n.split(".")[0] for n in names} <= allowed, names


def test_it_runs_as_a_copied_file(tmp_path: Path) -> None:
    copy = tmp_path / "verify_audit.py"
    copy.write_text((ROOT / "consent" / "verify_audit.py").read_text())
    note = tmp_path / "note.txt"
    note.write_text(GO_NOTE)
    run = subprocess.run(
        [sys.executable, str(copy), "checkpoint", str(note), "--key", GO_VERIFIER_KEY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    # The note verifies, but it is no checkpoint: the verifier says so and fails.
    assert run.returncode == 1 and "origin, a size and a root hash" in run.stderr
