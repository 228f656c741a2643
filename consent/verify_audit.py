#!/usr/bin/env python3
"""Check NextBest's audit log without NextBest: a checkpoint's signature, that a decision record
is in the log a checkpoint commits to, and that a later checkpoint extends an earlier one.

This file is meant to be copied out and read. It needs Python 3.10 or later and the
``cryptography`` package (for Ed25519), and imports nothing from NextBest.

**The tree** is the Merkle tree of RFC 9162 (Certificate Transparency 2.0, section 2.1) over the
log's records in order, with SHA-256: a leaf is ``SHA-256(0x00 || data)``, an inner node
``SHA-256(0x01 || left || right)``. Record ``seq`` (counted from 1) is leaf ``seq - 1``, and its
data is the UTF-8 of ``header + "\\n" + body``, where ``header`` is the canonical JSON (sorted
keys, no spaces) of ``{"seq", "decision_id", "recorded_at", "customer_ref"}`` and ``body`` the
record's stored JSON text, byte for byte.

**A checkpoint** is a signed note in the C2SP ``tlog-checkpoint`` format
(https://c2sp.org/tlog-checkpoint, https://c2sp.org/signed-note)::

    <origin>
    <tree size>
    <root hash, base64>
    [extension lines]

    — <key name> <base64(key id || Ed25519 signature)>

The signature covers every line above the blank one, newlines included. The key id is the first
four bytes of ``SHA-256(key name || "\\n" || 0x01 || public key)``, and the verifier key is
written ``<key name>+<key id, hex>+<base64(0x01 || public key)>``.

Usage::

    python verify_audit.py checkpoint CHECKPOINT --key VERIFIER_KEY
    python verify_audit.py inclusion PROOF.json --key VERIFIER_KEY
    python verify_audit.py consistency PROOF.json --key VERIFIER_KEY

``VERIFIER_KEY`` is the key itself or a file holding it. An inclusion proof's JSON holds
``record`` (``seq``, ``decision_id``, ``recorded_at``, ``customer_ref``, ``body``),
``leaf_index``, ``tree_size``, ``proof`` (base64 hashes) and ``checkpoint`` (its text); a
consistency proof's holds ``old`` and ``new`` (checkpoint texts) and ``proof``. Each command
prints what it checked and exits 0, or prints why it failed and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HASH_SIZE = 32
_ED25519 = 0x01
_SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space begin each signature line


class VerificationError(Exception):
    """A proof, a checkpoint or a signature that does not hold."""


# --- the tree (RFC 9162, section 2.1) ---------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def record_leaf(record: dict[str, Any]) -> bytes:
    """The leaf data of one record as exported (see the module's docstring)."""
    header = json.dumps(
        {
            "seq": int(record["seq"]),
            "decision_id": record["decision_id"],
            "recorded_at": record["recorded_at"],
            "customer_ref": record["customer_ref"],
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return f"{header}\n{record['body']}".encode()


def _hashes(values: Sequence[bytes]) -> list[bytes]:
    for value in values:
        if len(value) != HASH_SIZE:
            raise VerificationError(f"a proof hash has {len(value)} bytes, not {HASH_SIZE}")
    return list(values)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """That the leaf hash ``leaf`` is leaf ``index`` of the tree of ``size`` leaves whose root
    is ``root`` (RFC 9162, 2.1.3.2). Raises ``VerificationError`` if not."""
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} is outside a tree of {size}")
    if len(leaf) != HASH_SIZE:
        raise VerificationError(f"the leaf hash has {len(leaf)} bytes, not {HASH_SIZE}")
    fn, sn, r = index, size - 1, leaf
    for p in _hashes(proof):
        if sn == 0:
            raise VerificationError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("the inclusion proof is too short")
    if r != root:
        raise VerificationError("the inclusion proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """That the tree of ``size2`` leaves with root ``root2`` extends the tree of ``size1``
    leaves with root ``root1`` (RFC 9162, 2.1.4.2). Raises ``VerificationError`` if not."""
    proof = _hashes(proof)
    if _same_tree(size1, size2, proof, root1, root2):
        return
    if size1 & (size1 - 1) == 0:  # an exact power of two: the old root is a node of the new
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise VerificationError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    _ends_at(sn, ((fr, root1, "old"), (sr, root2, "new")))


def _ends_at(sn: int, roots: Sequence[tuple[bytes, bytes, str]]) -> None:
    if sn != 0:
        raise VerificationError("the consistency proof is too short")
    for calculated, expected, which in roots:
        if calculated != expected:
            raise VerificationError(f"the consistency proof does not lead to the {which} root")


def _same_tree(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> bool:
    """The cases with nothing to chain: refused, or (two equal trees) proved by their roots."""
    if size2 < size1:
        raise VerificationError(f"the new tree ({size2}) is smaller than the old ({size1})")
    if size1 == 0:
        # Every tree extends the empty one: such a proof says nothing, and is refused.
        raise VerificationError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise VerificationError("trees of the same size need an empty proof")
        if root1 != root2:
            raise VerificationError("two trees of the same size have different roots")
        return True
    if not proof:
        raise VerificationError("the consistency proof is empty")
    return False


# --- checkpoints (C2SP tlog-checkpoint and signed-note) --------------------------------------


@dataclass(frozen=True)
class VerifierKey:
    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        try:
            name, key_id, encoded = text.strip().split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
            wanted = bytes.fromhex(key_id)
        except (ValueError, binascii.Error) as exc:
            raise VerificationError("not a verifier key (name+id+key)") from exc
        if not name or len(raw) != 33 or raw[0] != _ED25519:
            raise VerificationError("not an Ed25519 verifier key")
        if key_id_of(name, raw[1:]) != wanted:
            raise VerificationError("the verifier key's id does not match its key")
        return cls(name, wanted, raw[1:])


def key_id_of(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]


def open_note(note: str, key: VerifierKey) -> str:
    """The text of a signed note, once ``key``'s signature on it is verified. Signatures by
    other keys (a witness's, say) are left to their owners' verifiers."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    body, sep, signatures = note.partition("\n\n")
    if not sep or not body or not signatures.endswith("\n"):
        raise VerificationError("not a signed note: no blank line before the signatures")
    text = body + "\n"
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    signed = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith(_SIGNATURE_PREFIX):
            raise VerificationError("a signature line does not begin with an em dash")
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise VerificationError("a signature is not base64") from exc
        if name != key.name or raw[:4] != key.key_id:
            continue
        try:
            public.verify(raw[4:], text.encode())
        except InvalidSignature as exc:
            raise VerificationError(f"the signature of {name} does not verify") from exc
        signed = True
    if not signed:
        raise VerificationError(f"the note carries no signature by {key.name}")
    return text


def open_checkpoint(note: str, key: VerifierKey) -> Checkpoint:
    """The checkpoint a signed note holds, once ``key``'s signature on it is verified."""
    body = open_note(note, key)[:-1]
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("a checkpoint has an origin, a size and a root hash")
    origin, size, root = lines[0], lines[1], lines[2]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise VerificationError("the checkpoint's size is not a decimal number")
    try:
        root_hash = base64.b64decode(root, validate=True)
    except binascii.Error as exc:
        raise VerificationError("the checkpoint's root is not base64") from exc
    if len(root_hash) != HASH_SIZE:
        raise VerificationError("the checkpoint's root is not a SHA-256 hash")
    return Checkpoint(origin, int(size), root_hash, tuple(lines[3:]))


# --- the command line -------------------------------------------------------------------------


def _b64_list(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise VerificationError("a proof is a list of base64 hashes")
    try:
        return [base64.b64decode(v, validate=True) for v in values]
    except (binascii.Error, TypeError) as exc:
        raise VerificationError("a proof hash is not base64") from exc


def check_inclusion(document: dict[str, Any], key: VerifierKey) -> str:
    checkpoint = open_checkpoint(document["checkpoint"], key)
    record = document["record"]
    index, size = int(document["leaf_index"]), int(document["tree_size"])
    if index != int(record["seq"]) - 1:
        raise VerificationError(f"record {record['seq']} is not leaf {index}")
    if size != checkpoint.size:
        raise VerificationError(
            f"the proof is for {size} records, the checkpoint for {checkpoint.size}"
        )
    leaf = leaf_hash(record_leaf(record))
    verify_inclusion(leaf, index, size, _b64_list(document["proof"]), checkpoint.root)
    return (
        f"record {record['seq']} ({record['decision_id']}) is in the log of {checkpoint.size} "
        f"records signed by {key.name} ({checkpoint.origin})"
    )


def check_consistency(document: dict[str, Any], key: VerifierKey) -> str:
    old = open_checkpoint(document["old"], key)
    new = open_checkpoint(document["new"], key)
    if old.origin != new.origin:
        raise VerificationError("the two checkpoints are of different logs")
    verify_consistency(old.size, new.size, _b64_list(document["proof"]), old.root, new.root)
    return (
        f"the log of {new.size} records extends the log of {old.size} records "
        f"({new.origin}, both signed by {key.name})"
    )


def _read(value: str) -> str:
    path = Path(value)
    return path.read_text(encoding="utf-8") if path.is_file() else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=("checkpoint", "inclusion", "consistency"))
    parser.add_argument("file", help="The checkpoint, or the proof's JSON.")
    parser.add_argument("--key", required=True, help="The verifier key, or a file holding it.")
    args = parser.parse_args(argv)
    try:
        key = VerifierKey.parse(_read(args.key))
        text = Path(args.file).read_text(encoding="utf-8")
        if args.what == "checkpoint":
            cp = open_checkpoint(text, key)
            message = f"checkpoint of {cp.size} records, signed by {key.name} ({cp.origin})"
        elif args.what == "inclusion":
            message = check_inclusion(json.loads(text), key)
        else:
            message = check_consistency(json.loads(text), key)
    except (VerificationError, KeyError, ValueError, OSError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"OK: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
