"""Publications of signed checkpoints: what a reader can trust in one, and every way one can be
wrong (another key, another log, leaves or base that do not lead to the signed root, a damaged
document)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import verify_audit as v
from consent.rules.checkpoints import (
    MAX_LEAVES,
    Publication,
    open_publication,
    publish,
)
from consent.rules.merkle import Frontier, Tree, leaf_hash
from consent.rules.signed_note import Signer

ORIGIN = "bank.example/nextbest/audit"
SIGNER = Signer.generate(ORIGIN)
KEY = v.VerifierKey.parse(SIGNER.verifier_key())
AT = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def leaves(n: int, start: int = 0) -> list[bytes]:
    return [leaf_hash(str(i).encode()) for i in range(start, start + n)]


def test_a_publication_opens_to_the_tree_it_signs_and_travels_as_json() -> None:
    first, frontier = publish(SIGNER, ORIGIN, Frontier(), leaves(5), AT)
    second, _ = publish(SIGNER, ORIGIN, frontier, leaves(3, 5), AT)
    head = open_publication(Publication.from_json(second.to_json()), [KEY], ORIGIN)
    assert (head.size, head.leaves_from, head.time, head.key_name) == (8, 5, AT, ORIGIN)
    assert head.root == Tree(leaves(8)).root()
    assert head.leaf_hashes == tuple(leaves(3, 5))
    # The note inside is a checkpoint the stand-alone verifier reads as it is.
    checkpoint = v.open_checkpoint(second.note, KEY)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 8)
    assert checkpoint.extensions == ("time 2026-12-07T09:30:00.000000Z",)
    assert open_publication(first, [KEY], ORIGIN).frontier.root() == Tree(leaves(5)).root()


def test_it_is_refused_when_signed_by_another_key_or_for_another_log() -> None:
    publication, _ = publish(SIGNER, ORIGIN, Frontier(), leaves(2), AT)
    stranger = v.VerifierKey.parse(Signer.generate(ORIGIN).verifier_key())
    with pytest.raises(v.VerificationError, match="no trusted key"):
        open_publication(publication, [stranger], ORIGIN)
    assert open_publication(publication, [stranger, KEY], ORIGIN).size == 2  # after a rotation
    with pytest.raises(v.VerificationError, match="another log"):
        open_publication(publication, [KEY], "other.example/audit")


def _edit(publication: Publication, **changes: object) -> Publication:
    document = json.loads(publication.to_json())
    document.update(changes)
    return Publication.from_json(json.dumps(document))


def test_leaves_or_a_base_that_do_not_lead_to_the_signed_root_are_refused() -> None:
    _, base = publish(SIGNER, ORIGIN, Frontier(), leaves(6), AT)
    publication, _ = publish(SIGNER, ORIGIN, base, leaves(4, 6), AT)
    swapped = leaves(4, 6)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    forged_leaves = base64.b64encode(b"".join(swapped)).decode()
    with pytest.raises(v.VerificationError, match="do not lead to the signed root"):
        open_publication(_edit(publication, leaf_hashes=forged_leaves), [KEY], ORIGIN)
    wrong_base = [base64.b64encode(bytes(32)).decode()] * len(base.hashes)
    with pytest.raises(v.VerificationError, match="do not lead to the signed root"):
        open_publication(_edit(publication, base=wrong_base), [KEY], ORIGIN)
    with pytest.raises(v.VerificationError, match="leaves end at 9"):
        short = base64.b64encode(b"".join(leaves(3, 6))).decode()
        open_publication(_edit(publication, leaf_hashes=short), [KEY], ORIGIN)
    with pytest.raises(v.VerificationError, match="base does not hold"):
        open_publication(_edit(publication, base=[]), [KEY], ORIGIN)


@settings(max_examples=40, deadline=None)
@given(bit=st.integers(0, 10_000))
def test_one_flipped_bit_anywhere_in_the_note_is_refused(bit: int) -> None:
    publication, _ = publish(SIGNER, ORIGIN, Frontier(), leaves(3), AT)
    raw = bytearray(publication.note.encode())
    raw[bit % len(raw)] ^= 1 << (bit % 8)
    try:
        note = raw.decode()
    except UnicodeDecodeError:
        return  # not text any more: no reader gets that far
    in_signature = bit % len(raw) > publication.note.rindex(" ")
    if in_signature and _signature(note) == _signature(publication.note):
        # Base64 leaves two bits of the signature's last character unused: a flip there
        # changes no byte that is signed or checked (Go's note reader accepts it too).
        return
    flipped = Publication(note, publication.leaves_from, publication.base, publication.leaf_hashes)
    with pytest.raises(v.VerificationError):
        open_publication(flipped, [KEY], ORIGIN)


def _signature(note: str) -> bytes | None:
    line = note.rstrip("\n").rsplit("\n", 1)[-1]
    try:
        return base64.b64decode(line.rsplit(" ", 1)[-1], validate=True)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "document",
    [
        "",
        "[]",
        '{"format": "nextbest.audit.checkpoint.v2"}',
        '{"format": "nextbest.audit.checkpoint.v1", "checkpoint": 3}',
        '{"format": "nextbest.audit.checkpoint.v1", "checkpoint": "x", "leaves_from": -1, '
        '"base": [], "leaf_hashes": ""}',
        '{"format": "nextbest.audit.checkpoint.v1", "checkpoint": "x", "leaves_from": true, '
        '"base": [], "leaf_hashes": ""}',
        '{"format": "nextbest.audit.checkpoint.v1", "checkpoint": "x", "leaves_from": 0, '
        '"base": [], "leaf_hashes": "AAAA"}',
        '{"format": "nextbest.audit.checkpoint.v1", "checkpoint": "x", "leaves_from": 0, '
        '"base": ["%%"], "leaf_hashes": ""}',
    ],
)
def test_a_document_that_is_not_a_publication_is_refused_with_a_value_error(
    document: str,
) -> None:
    with pytest.raises(ValueError):
        Publication.from_json(document)


def test_a_publication_carries_at_most_max_leaves() -> None:
    with pytest.raises(ValueError, match="at most"):
        publish(SIGNER, ORIGIN, Frontier(), [bytes(32)] * (MAX_LEAVES + 1), AT)
    too_many = base64.b64encode(bytes(32) * (MAX_LEAVES + 1)).decode()
    document = {
        "format": "nextbest.audit.checkpoint.v1",
        "checkpoint": "x",
        "leaves_from": 0,
        "base": [],
        "leaf_hashes": too_many,
    }
    with pytest.raises(ValueError, match="at most"):
        Publication.from_json(json.dumps(document))
