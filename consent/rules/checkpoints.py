"""Signed checkpoints of the audit log as they are published outside the operational store, and
what a reader can trust in one. No I/O here: ``consent/stores/audit/checkpointer.py`` makes and
publishes them, ``consent/stores/audit/sinks.py`` writes and reads them, and verification
(``consent/rules/chain.py``) holds the log to them.

**A publication** is one JSON document (``FORMAT``)::

    {"format": "nextbest.audit.checkpoint.v1",
     "checkpoint": "<signed note>",
     "leaves_from": 1200,
     "base": ["<base64 hash>", ...],
     "leaf_hashes": "<base64 of 32-byte leaf hashes, concatenated>"}

- ``checkpoint`` is a signed note (https://c2sp.org/signed-note) holding a ``tlog-checkpoint``
  (https://c2sp.org/tlog-checkpoint): origin, size, base64 root, and one extension line
  ``time <UTC, RFC 3339 with microseconds>``. It is what ``verify_audit.py`` checks.
- ``leaf_hashes`` are the leaves of records ``leaves_from + 1 .. size`` (leaf ``i`` is record
  ``i + 1``), and ``base`` the tree's right edge before them (``merkle.Frontier`` at
  ``leaves_from``). Neither is signed; both are proved by the signature: the base extended by
  the leaves must give the signed root. The leaves let verification name the first record that
  differs, not only the stretch between two checkpoints; the base lets a writer that starts
  later continue the tree from the newest publication instead of reading every leaf again.

A publication carries at most ``MAX_LEAVES`` leaves, so it fits a Kafka record of the default
size: a writer that has more to cover publishes several checkpoints on the way.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consent.rules.chain import timestamp
from consent.rules.merkle import HASH_SIZE, Frontier
from consent.rules.signed_note import Signer, checkpoint_text
from consent.verify_audit import (
    Checkpoint,
    VerificationError,
    VerifierKey,
    open_checkpoint,
)

FORMAT = "nextbest.audit.checkpoint.v1"
#: Leaves one publication carries at most: 256 KiB of hashes, a third of a megabyte in base64,
#: under Kafka's default largest record (1 MiB).
MAX_LEAVES = 8192
TIME_PREFIX = "time "


@dataclass(frozen=True)
class Publication:
    """A signed checkpoint with the leaves it adds (see the module's docstring); not yet
    trusted: ``open`` checks it."""

    note: str
    leaves_from: int
    base: tuple[bytes, ...]
    leaf_hashes: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return self.leaves_from + len(self.leaf_hashes)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "checkpoint": self.note,
                "leaves_from": self.leaves_from,
                "base": [base64.b64encode(h).decode() for h in self.base],
                "leaf_hashes": base64.b64encode(b"".join(self.leaf_hashes)).decode(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Publication:
        """A publication's fields, checked for shape only. Raises ``ValueError``."""
        try:
            document: Any = json.loads(text)
            if not isinstance(document, dict) or document.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} document")
            note, leaves_from = document["checkpoint"], document["leaves_from"]
            if not isinstance(note, str) or type(leaves_from) is not int or leaves_from < 0:
                raise ValueError("checkpoint must be text and leaves_from a count")
            base = tuple(base64.b64decode(h, validate=True) for h in document["base"])
            packed = base64.b64decode(document["leaf_hashes"], validate=True)
        except (KeyError, TypeError, binascii.Error, json.JSONDecodeError) as error:
            raise ValueError(f"not a {FORMAT} document: {error}") from error
        if len(packed) % HASH_SIZE or len(packed) > MAX_LEAVES * HASH_SIZE:
            raise ValueError(
                f"leaf_hashes must be at most {MAX_LEAVES} hashes of {HASH_SIZE} bytes"
            )
        leaves = tuple(packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE))
        return cls(note, leaves_from, base, leaves)


@dataclass(frozen=True)
class SignedHead:
    """A publication whose signature, origin and leaves hold: what verification trusts."""

    origin: str
    size: int
    root: bytes
    time: datetime
    key_name: str
    leaves_from: int
    leaf_hashes: tuple[bytes, ...]
    frontier: Frontier  # the tree's right edge at ``size``

    def describe(self) -> str:
        at = timestamp(self.time)
        return f"the checkpoint of {self.size} records signed by {self.key_name} at {at}"


def publish(
    signer: Signer,
    origin: str,
    base: Frontier,
    leaf_hashes: Sequence[bytes],
    at: datetime,
) -> tuple[Publication, Frontier]:
    """Sign the tree ``base`` extended by ``leaf_hashes`` (at most ``MAX_LEAVES``); the
    publication and the extended frontier."""
    if len(leaf_hashes) > MAX_LEAVES:
        raise ValueError(f"a publication carries at most {MAX_LEAVES} leaves")
    frontier = base.copy()
    for leaf in leaf_hashes:
        frontier.append(leaf)
    text = checkpoint_text(origin, frontier.size, frontier.root(), (TIME_PREFIX + timestamp(at),))
    publication = Publication(signer.sign(text), base.size, base.hashes, tuple(leaf_hashes))
    return publication, frontier


def open_publication(
    publication: Publication, keys: Iterable[VerifierKey], origin: str
) -> SignedHead:
    """What ``publication`` proves, once signed by one of ``keys`` for ``origin`` and its leaves
    and base lead to the signed root. Raises ``VerificationError``."""
    checkpoint, key = _signed_by(publication.note, keys)
    if checkpoint.origin != origin:
        raise VerificationError(f"it is a checkpoint of another log ({checkpoint.origin!r})")
    if checkpoint.size != publication.size:
        raise VerificationError(
            f"its leaves end at {publication.size}, its checkpoint holds {checkpoint.size}"
        )
    try:
        frontier = Frontier(publication.leaves_from, publication.base)
    except ValueError as error:
        raise VerificationError(f"its base does not hold: {error}") from error
    for leaf in publication.leaf_hashes:
        frontier.append(leaf)
    if frontier.root() != checkpoint.root:
        raise VerificationError("its base and leaves do not lead to the signed root")
    return SignedHead(
        checkpoint.origin,
        checkpoint.size,
        checkpoint.root,
        _time_of(checkpoint),
        key.name,
        publication.leaves_from,
        publication.leaf_hashes,
        frontier,
    )


def _signed_by(note: str, keys: Iterable[VerifierKey]) -> tuple[Checkpoint, VerifierKey]:
    """The checkpoint in ``note`` and the first of ``keys`` that signed it."""
    problem = ""
    for key in keys:
        try:
            return open_checkpoint(note, key), key
        except VerificationError as error:
            problem = f" ({error})"
    raise VerificationError("no trusted key signed it" + problem)


def _time_of(checkpoint: Checkpoint) -> datetime:
    times = [e[len(TIME_PREFIX) :] for e in checkpoint.extensions if e.startswith(TIME_PREFIX)]
    try:
        at = datetime.fromisoformat(times[0]) if len(times) == 1 else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise VerificationError("its checkpoint carries no single time line in UTC")
    return at.astimezone(UTC)
