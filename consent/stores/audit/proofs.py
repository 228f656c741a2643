"""Proofs for a compliance officer: that a decision record is in the log a signed checkpoint
commits to (inclusion), and that a later checkpoint extends an earlier one (consistency). Each
answer holds what ``consent/verify_audit.py`` needs to check it alone.

The tree is kept in memory (``merkle.Tree``, 64 bytes a record), built from the stored leaf
hashes on the first request after a start and followed incrementally after that. Before
answering, the tree at the checkpoint's size must give the checkpoint's signed root: a log
changed under a published checkpoint gets no proof (``ProofRefused``), since none would verify.

The signed checkpoints come from the sinks, read once and again whenever a size is asked for
that is not known yet; this process's own publications are added as it makes them.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from consent.rules.chain import record_leaf_hash, timestamp
from consent.rules.checkpoints import Publication, SignedHead, open_publication
from consent.rules.merkle import Tree
from consent.stores.audit import reads
from consent.stores.audit.sinks import Sink, SinkError
from consent.stores.tables import audit_log
from consent.verify_audit import VerificationError, VerifierKey


class ProofRefused(RuntimeError):
    """No proof can be given: ``code`` says why (``not_found``, ``no_checkpoint``,
    ``log_differs``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RebuildStats:
    records: int
    seconds: float
    tree_bytes: int


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


class Checkpoints:
    """The signed checkpoints of the log, by size, as the sinks hold them."""

    def __init__(
        self, sinks: Sequence[Sink], keys: Callable[[], Sequence[VerifierKey]], origin: str
    ) -> None:
        self.sinks = list(sinks)
        self.keys = keys
        self.origin = origin
        self._lock = threading.Lock()
        self._known: dict[int, tuple[SignedHead, str]] = {}  # size -> (head, note)
        self._read = False

    def add(self, publication: Publication) -> None:
        """A publication this process made (trusted as signed here, and checked anyway)."""
        self._open([publication])

    def _open(self, publications: Iterable[Publication]) -> None:
        keys = list(self.keys())
        for publication in publications:
            try:
                head = open_publication(publication, keys, self.origin)
            except VerificationError:
                continue  # verification reports it; a proof is never built on it
            with self._lock:
                self._known.setdefault(head.size, (head, publication.note))

    def refresh(self) -> None:
        found: list[Publication] = []
        for sink in self.sinks:
            try:
                found.extend(p for _, p in sink.read() if isinstance(p, Publication))
            except SinkError:
                continue
        self._open(found)
        self._read = True

    def of_size(self, size: int) -> tuple[SignedHead, str] | None:
        if size not in self._known:
            self.refresh()
        return self._known.get(size)

    def covering(self, seq: int) -> tuple[SignedHead, str] | None:
        """The newest checkpoint that holds record ``seq``."""
        if not self._read or not any(size >= seq for size in self._known):
            self.refresh()
        sizes = [size for size in self._known if size >= seq]
        return self._known[max(sizes)] if sizes else None


class Proofs:
    """Inclusion and consistency proofs against the published checkpoints."""

    def __init__(
        self,
        engine: Engine,
        checkpoints: Checkpoints,
        publish_now: Callable[[], Sequence[Publication]] | None = None,
    ) -> None:
        self.engine = engine
        self.checkpoints = checkpoints
        #: Signs a checkpoint of the log as it is, for a record no checkpoint covers yet.
        self.publish_now = publish_now
        self._tree: Tree | None = None
        self._lock = threading.Lock()
        self.rebuilt: RebuildStats | None = None

    def tree(self) -> Tree:
        """The tree of every record in the log now (built on first use)."""
        with self._lock:
            started = time.perf_counter()
            first = self._tree is None
            tree = self._tree = self._tree or Tree()
            self._follow(tree)
            if first:
                elapsed = time.perf_counter() - started
                self.rebuilt = RebuildStats(tree.size, elapsed, tree.memory)
            return tree

    def _follow(self, tree: Tree) -> None:
        while True:
            try:
                leaves = reads.leaf_hashes(self.engine, tree.size)
            except reads.MissingRecord as missing:
                raise ProofRefused("log_differs", str(missing)) from missing
            for leaf in leaves:
                tree.append(leaf)
            if len(leaves) < reads.READ_LEAVES:
                return

    def _checked(self, size: int) -> tuple[Tree, SignedHead, str]:
        """The tree and the checkpoint of ``size``, once the tree gives its signed root."""
        found = self.checkpoints.of_size(size)
        if found is None:
            raise ProofRefused("no_checkpoint", f"no published checkpoint holds {size} records")
        tree = self.tree()
        head, note = found
        if tree.size < size or tree.root(size) != head.root:
            raise ProofRefused(
                "log_differs",
                f"the log does not give the root of {head.describe()}: "
                "run `nextbest audit verify` to find where it differs",
            )
        return tree, head, note

    def inclusion(self, decision_id: str, size: int | None = None) -> dict[str, Any]:
        """The record of ``decision_id``, its leaf hash and its inclusion proof in the
        checkpoint of ``size`` records (default: the newest that holds it; if none does yet,
        one is signed now)."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(audit_log).where(audit_log.c.decision_id == decision_id)
            ).first()
        if row is None:
            raise ProofRefused("not_found", "no decision with that id")
        if size is None:
            size = self._covering_size(row.seq)
        if size < row.seq:
            raise ProofRefused(
                "no_checkpoint", f"the checkpoint of {size} records does not hold record {row.seq}"
            )
        tree, _, note = self._checked(size)
        record = {
            "seq": row.seq,
            "decision_id": row.decision_id,
            "recorded_at": timestamp(row.recorded_at),
            "customer_ref": row.customer_ref,
            "body": row.body,
        }
        leaf = record_leaf_hash(
            row.seq, row.decision_id, record["recorded_at"], row.customer_ref, row.body
        )
        if leaf != tree.leaf(row.seq - 1):  # its stored leaf hash was changed
            raise ProofRefused("log_differs", f"record {row.seq} is not the one in the tree")
        return {
            "record": record,
            "leaf_hash": _b64(leaf),
            "leaf_index": row.seq - 1,
            "tree_size": size,
            "proof": [_b64(h) for h in tree.inclusion_proof(row.seq - 1, size)],
            "checkpoint": note,
        }

    def _covering_size(self, seq: int) -> int:
        found = self.checkpoints.covering(seq)
        if found is None and self.publish_now is not None:
            for publication in self.publish_now():
                self.checkpoints.add(publication)
            found = self.checkpoints.covering(seq)
        if found is None:
            raise ProofRefused("no_checkpoint", f"no published checkpoint holds record {seq} yet")
        return found[0].size

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        """That the checkpoint of ``new`` records extends the one of ``old``."""
        if not 0 < old <= new:
            raise ProofRefused("invalid", "a consistency proof needs 0 < from <= to")
        _, _, old_note = self._checked(old)
        tree, _, new_note = self._checked(new)
        return {
            "old": old_note,
            "new": new_note,
            "proof": [_b64(h) for h in tree.consistency_proof(old, new)],
        }
