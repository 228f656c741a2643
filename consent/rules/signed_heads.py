"""The signed tree heads verification holds a log to (``consent.rules.checkpoints.SignedHead``
is one), and the tree of the records walked so far held to them: at each head's size its root,
and every leaf a head published. ``chain.verify_chain`` walks the log with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from consent.rules.merkle import Frontier


class Head(Protocol):
    """A signed tree head as verification uses it (``consent.rules.checkpoints.SignedHead``):
    the root of the first ``size`` records, and the leaves of records ``leaves_from + 1`` to
    ``size``."""

    @property
    def size(self) -> int: ...
    @property
    def root(self) -> bytes: ...
    @property
    def time(self) -> datetime: ...
    @property
    def leaves_from(self) -> int: ...
    @property
    def leaf_hashes(self) -> tuple[bytes, ...]: ...
    def describe(self) -> str: ...


class Signed:
    """The signed heads, the leaf each of them gives for a record, and the tree of the records
    walked so far held to them."""

    def __init__(self, heads: Sequence[Head]) -> None:
        self.heads = list(heads)
        self.by_size: dict[int, list[Head]] = {}
        self.leaves: dict[int, tuple[bytes, Head]] = {}
        self.fork: tuple[int, str] | None = None
        self.frontier = Frontier()
        self.covered: Head | None = None  # the largest head that held so far
        for head in sorted(self.heads, key=lambda h: h.time):
            self.by_size.setdefault(head.size, []).append(head)
            for offset, leaf in enumerate(head.leaf_hashes):
                index = head.leaves_from + offset
                known = self.leaves.setdefault(index, (leaf, head))
                if known[0] != leaf and self.fork is None:
                    self.fork = (
                        index + 1,
                        f"{known[1].describe()} and {head.describe()} disagree about record "
                        f"{index + 1}: the signing key signed two different logs",
                    )

    def add(self, seq: int, leaf: bytes) -> tuple[int, str] | None:
        """Record ``seq``, whose leaf hash is ``leaf``, is next: where the log first differs
        from a signed head (a record, or the first record of a stretch), and how."""
        published = self.leaves.get(seq - 1)
        if published is not None and published[0] != leaf:
            return seq, f"record {seq} is not the record in {published[1].describe()}"
        self.frontier.append(leaf)
        for head in self.by_size.get(seq, ()):
            if head.root != self.frontier.root():
                since = 1 if self.covered is None else self.covered.size + 1
                return since, f"records {since} to {seq} are not the records in {head.describe()}"
            self.covered = head
        return None

    @property
    def covered_size(self) -> int:
        return 0 if self.covered is None else self.covered.size

    @property
    def covered_at(self) -> datetime | None:
        return None if self.covered is None else self.covered.time


def signed_truncation(last: int, heads: Sequence[Head]) -> str | None:
    """Whether a signed head holds records beyond ``last``, the log's last: a cut-off tail."""
    beyond = [h for h in heads if h.size > last]
    if not beyond:
        return None
    latest = max(beyond, key=lambda h: h.size)
    return f"records {last + 1} to {latest.size} are missing: {latest.describe()} holds them"
