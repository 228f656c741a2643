"""The audit chain's format and its verification: what a record's hash covers, how a customer is
named in the log, what a checkpoint holds, and how a chain (in the database or exported) is
checked. No database here: ``consent/stores/audit/`` writes and reads the chain with these
definitions, and an outside auditor checks an export with ``verify_export`` alone.

**Hashing.** A record's hash covers its place in the chain and every column stored with it::

    header      = canonical({"seq", "decision_id", "recorded_at", "customer_ref"})
    record_hash = "sha256:" + SHA-256(prev_hash + "\\n" + header + "\\n" + body)

``header`` is canonical JSON (sorted keys, no spaces, UTF-8); ``recorded_at`` in it is UTC with
microseconds (``2026-11-01T09:00:00.000000Z``); the first record's ``prev_hash`` is ``GENESIS``.
``body`` is the ``DecisionRecord``'s JSON as its model writes it, stored and hashed byte for
byte: verification hashes the stored text and never serialises again, so it does not depend on
how any JSON library orders keys or writes floats (exports carry the text for that reason), and
no record is serialised a second time in sorted-key form just to be hashed.
Neither a hash nor the header holds a raw newline, so the parts cannot be shifted into one
another.

**Pseudonyms.** The log names a customer only as ``cref:`` + HMAC-SHA256(key, customer id) under
a random per-customer key. Deleting the key (the right to erasure) leaves every record and the
chain intact, but nothing ties those records to the customer any more.

**Checkpoints.** Deleting the newest records leaves a valid chain; only a head kept from before
shows it. A ``Checkpoint`` is such a head (and can be handed to an outside party as JSON);
verification checks every checkpoint it is given.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from consent.rules.signed_heads import Head, Signed, signed_truncation

GENESIS = "sha256:" + "0" * 64
PSEUDONYM_PREFIX = "cref:"
#: The ``customer_ref`` of an operation's record (a batch scoring run, an erasure): it concerns
#: no one customer, and no pseudonym (``cref:...``) can equal it.
OPERATION_REF = "operation"
#: Hex digits of the HMAC kept in a pseudonym: 128 bits, far beyond any bank's customer count.
PSEUDONYM_HEX_DIGITS = 32
#: A customer's pseudonymisation key.
KEY_BYTES = 32


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def timestamp(at: datetime) -> str:
    """A time as hashed and exported. SQLite hands back naive datetimes; they are UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def header(seq: int, decision_id: str, recorded_at: str, customer_ref: str) -> str:
    """The canonical header of a record: its place and the columns stored beside its body."""
    return canonical(
        {
            "seq": seq,
            "decision_id": decision_id,
            "recorded_at": recorded_at,
            "customer_ref": customer_ref,
        }
    )


def record_hashes(
    prev_hash: str, seq: int, decision_id: str, recorded_at: str, customer_ref: str, body: str
) -> tuple[str, bytes]:
    """The record's chain hash and its Merkle leaf hash, from one encoding of its header and
    body (a body is tens of kilobytes: the writers and verification encode it once)."""
    data = f"{header(seq, decision_id, recorded_at, customer_ref)}\n{body}".encode()
    chained = hashlib.sha256(f"{prev_hash}\n".encode())
    chained.update(data)
    leaf = hashlib.sha256(b"\x00")
    leaf.update(data)
    return f"sha256:{chained.hexdigest()}", leaf.digest()


def hash_record(
    prev_hash: str, seq: int, decision_id: str, recorded_at: str, customer_ref: str, body: str
) -> str:
    return record_hashes(prev_hash, seq, decision_id, recorded_at, customer_ref, body)[0]


def record_leaf_hash(
    seq: int, decision_id: str, recorded_at: str, customer_ref: str, body: str
) -> bytes:
    """The record's leaf in the log's Merkle tree (RFC 9162: ``SHA-256(0x00 || data)``): the
    same header and body as its chain hash, without ``prev_hash``, so a record's proof does
    not depend on the chain's earlier links."""
    data = f"{header(seq, decision_id, recorded_at, customer_ref)}\n{body}".encode()
    return hashlib.sha256(b"\x00" + data).digest()


def new_key() -> bytes:
    """A new random pseudonymisation key for one customer."""
    return secrets.token_bytes(KEY_BYTES)


def pseudonym(key: bytes, customer_id: str) -> str:
    mac = hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + mac[:PSEUDONYM_HEX_DIGITS]


def mentions(text: str, customer_id: str) -> bool:
    """Whether ``text`` (JSON) names the customer: their id in any case, but not as part of a
    longer word or number (so "C1" is not found in "C12", nor in a hash)."""
    needle = json.dumps(customer_id, ensure_ascii=False)[1:-1].lower()
    haystack = text.lower()
    # str.find, not a regex: a pattern that opens with a look-behind is tried at every offset,
    # which is slow on a large record.
    at = haystack.find(needle)
    while at >= 0:
        end = at + len(needle)
        before = haystack[at - 1] if at else ""
        after = haystack[end] if end < len(haystack) else ""
        if not (before.isascii() and before.isalnum()) and not (
            after.isascii() and after.isalnum()
        ):
            return True
        at = haystack.find(needle, at + 1)
    return False


@dataclass(frozen=True)
class Appended:
    """A record's place in the chain once it is committed."""

    seq: int
    prev_hash: str
    record_hash: str
    decision_id: str
    customer_ref: str  # the pseudonym the record was written under
    recorded_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain at a moment: record ``seq`` had hash ``head_hash``."""

    seq: int
    head_hash: str
    records: int
    taken_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "records": self.records,
            "taken_at": timestamp(self.taken_at),
        }

    def to_json(self) -> str:
        return canonical(self.as_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        taken_at = datetime.fromisoformat(str(data["taken_at"]))
        if taken_at.tzinfo is None:
            raise ValueError("a checkpoint's taken_at must carry its time zone")
        return cls(int(data["seq"]), str(data["head_hash"]), int(data["records"]), taken_at)

    @classmethod
    def from_json(cls, document: str) -> Checkpoint:
        return cls.from_dict(json.loads(document))


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int  # records found good, in order from the first
    head_hash: str  # hash of the last good record
    first_bad_seq: int | None = None
    first_bad_decision: str | None = None
    problem: str | None = None
    checkpoints: int = 0  # chain checkpoints (head hashes) checked
    signed_checkpoints: int = 0  # signed tree heads checked
    #: Records covered by the largest signed checkpoint that holds, and when it was signed.
    covered: int = 0
    covered_at: datetime | None = None


class Link(NamedTuple):
    """One record as the chain sees it, from the database or from an export."""

    seq: int
    decision_id: str
    recorded_at: str
    customer_ref: str
    prev_hash: str
    record_hash: str
    body: str
    #: The leaf hash stored with the record, if any (a stored one must match the record).
    leaf_hash: bytes | None = None


def verify_chain(
    links: Iterable[Link], checkpoints: Sequence[Checkpoint] = (), heads: Sequence[Head] = ()
) -> Verification:
    """Walk ``links`` in seq order from the first; name the first record that does not hold.

    Each record is held to the one before it (the chain), to the chain ``checkpoints`` and to
    the signed ``heads``: to the leaf a head published for it, and the tree so far to each
    head's root when it reaches the head's size. A head beyond the last record is a cut tail."""
    pinned: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        pinned.setdefault(checkpoint.seq, []).append(checkpoint)
    signed = Signed(heads)
    seq, prev, count = 1, GENESIS, 0

    def failed(at: int, decision: str | None, problem: str) -> Verification:
        return Verification(
            False,
            count,
            prev,
            at,
            decision,
            problem,
            len(checkpoints),
            len(signed.heads),
            signed.covered_size,
            signed.covered_at,
        )

    if any(checkpoint.head_hash != GENESIS for checkpoint in pinned.get(0, ())):
        return failed(0, None, "a checkpoint at seq 0 does not hold the genesis hash")
    if signed.fork is not None:
        return failed(signed.fork[0], None, signed.fork[1])
    for link in links:
        recomputed, leaf = record_hashes(
            link.prev_hash,
            link.seq,
            link.decision_id,
            link.recorded_at,
            link.customer_ref,
            link.body,
        )
        problem = _link_problem(link, seq, prev, recomputed, leaf) or _checkpoint_problem(
            link, pinned.get(seq, ())
        )
        if problem is not None:
            # Where the link holds its place, link.seq is seq.
            return failed(link.seq, link.decision_id, problem)
        differs = signed.add(seq, leaf)
        if differs is not None:
            at, problem = differs
            return failed(at, link.decision_id if at == seq else None, problem)
        seq, prev, count = seq + 1, link.record_hash, count + 1
    problem = _truncation(seq - 1, checkpoints) or signed_truncation(seq - 1, signed.heads)
    if problem is not None:
        return failed(seq, None, problem)
    return Verification(
        True,
        count,
        prev,
        checkpoints=len(checkpoints),
        signed_checkpoints=len(signed.heads),
        covered=signed.covered_size,
        covered_at=signed.covered_at,
    )


def _link_problem(link: Link, seq: int, prev: str, recomputed: str, leaf: bytes) -> str | None:
    """What is wrong with ``link`` as record ``seq`` after a record hashed ``prev`` (its hashes
    recomputed from its columns are ``recomputed`` and ``leaf``), if anything."""
    if link.seq > seq:
        return f"gap: record {seq} is missing (the next record is {link.seq})"
    if link.seq < seq:
        return f"out of order: record {link.seq} comes after record {seq - 1}"
    if link.prev_hash != prev:
        before = f"record {seq - 1}" if seq > 1 else "the genesis value"
        return f"prev_hash does not link to {before}"
    if recomputed != link.record_hash:
        return "record_hash does not match the record (its body or a column was changed)"
    if link.leaf_hash is not None and link.leaf_hash != leaf:
        return "leaf_hash does not match the record (its proofs would not hold)"
    return None


def _checkpoint_problem(link: Link, pinned: Iterable[Checkpoint]) -> str | None:
    """Whether a checkpoint taken at ``link``'s seq held another hash: a rewritten log."""
    for checkpoint in pinned:
        if checkpoint.head_hash != link.record_hash:
            return (
                f"record {link.seq} differs from the checkpoint taken at "
                f"{timestamp(checkpoint.taken_at)}: the log was rewritten at or before it"
            )
    return None


def _truncation(last: int, checkpoints: Sequence[Checkpoint]) -> str | None:
    """Whether a checkpoint holds a record beyond ``last``, the chain's last: a cut-off tail."""
    beyond = [c for c in checkpoints if c.seq > last]
    if not beyond:
        return None
    latest = max(beyond, key=lambda c: c.seq)
    return (
        f"truncated: the log ends at record {last}, but the checkpoint taken at "
        f"{timestamp(latest.taken_at)} holds record {latest.seq}"
    )


def verify_export(
    entries: Iterable[Mapping[str, Any]], checkpoints: Sequence[Checkpoint] = ()
) -> Verification:
    """Verify a whole-log export without the database (what an outside auditor runs)."""
    return verify_chain(
        (
            Link(
                e["seq"],
                e["decision_id"],
                e["recorded_at"],
                e["customer_ref"],
                e["prev_hash"],
                e["record_hash"],
                e["body"],
            )
            for e in entries
        ),
        checkpoints,
    )
