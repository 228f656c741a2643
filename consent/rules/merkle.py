"""The audit log's Merkle tree (RFC 9162, section 2.1): roots, inclusion proofs and consistency
proofs for any size the tree has had. No database here: a ``Tree`` is built from leaf hashes in
the log's order.

The tree keeps every complete node: level 0 holds the leaf hashes, level ``l`` the hash of each
aligned run of ``2**l`` leaves once the run is complete. The root of a tree of any size is then
at most one hash per level away from the nodes kept: a right edge that is not complete is folded
from its complete parts, as RFC 9162's ``MTH`` splits it (the largest power of two first). Each
node of a proof is a kept node or such a fold. Memory is about twice the leaf hashes (64 bytes a
record).

Verification is not here: ``consent/verify_audit.py``, the stand-alone verifier handed to auditors,
checks what this module proves, and the tests hold the two to each other and to published
vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` > 1): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """An append-only Merkle tree over leaf hashes. Each level is one packed byte string (32
    bytes a node), not a list of objects: a Python bytes object costs twice its hash."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return self._size

    @property
    def memory(self) -> int:
        """Bytes held by the nodes."""
        return sum(len(level) for level in self._levels)

    def _node(self, level: int, index: int) -> bytes:
        at = index * HASH_SIZE
        return bytes(self._levels[level][at : at + HASH_SIZE])

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise ValueError(f"leaf {index} is not in a tree of {self._size}")
        return self._node(0, index)

    def append(self, leaf: bytes) -> int:
        """Add a leaf hash; its index."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes")
        index = self._size
        self._levels[0] += leaf
        self._size += 1
        level, node = 0, leaf
        # Each completed pair makes its parent: a leaf with an odd index closes a run.
        while index & 1:
            node = node_hash(self._node(level, index - 1), node)
            level, index = level + 1, index >> 1
            if len(self._levels) == level:
                self._levels.append(bytearray())
            self._levels[level] += node
        return self._size - 1

    def _subtree(self, start: int, n: int) -> bytes:
        """The root of the ``n`` leaves from ``start`` (``start`` a multiple of the largest
        power of two not above ``n``, as every subtree RFC 9162 names is)."""
        if n & (n - 1) == 0:  # complete: kept
            level = n.bit_length() - 1
            return self._node(level, start >> level)
        k = _split(n)
        return node_hash(self._subtree(start, k), self._subtree(start + k, n - k))

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree's first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162's ``PATH(index, D[size])``: leaf ``index`` in the tree of ``size``."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of {size}")
        proof: list[bytes] = []
        start, n = 0, size
        while n > 1:
            k = _split(n)
            if index - start < k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, n = start + k, n - k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162's ``PROOF(size1, D[size2])``: the tree of ``size2`` extends the one of
        ``size1`` (0 < ``size1`` <= ``size2``)."""
        size2 = self.size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ValueError(f"no consistency proof from {size1} to {size2}")
        proof: list[bytes] = []
        start, m, n, whole = 0, size1, size2, True
        # SUBPROOF(m, D[start:start+n], whole), iteratively.
        while m != n:
            k = _split(n)
            if m <= k:
                proof.append(self._subtree(start + k, n - k))
                n = k
            else:
                proof.append(self._subtree(start, k))
                start, m, n, whole = start + k, m - k, n - k, False
        if not whole:
            proof.append(self._subtree(start, m))
        proof.reverse()
        return proof

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has had {self.size} leaves, not {size}")


class Frontier:
    """The tree's right edge alone: the roots of the complete subtrees that cover its leaves,
    largest (leftmost) first, one per set bit of the size. Enough to append and to give the
    root, in memory logarithmic in the size, so every writing process can sign checkpoints
    without keeping the tree. A signed checkpoint carries it, so a process that starts later
    continues from there rather than reading every leaf again."""

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self._size = size
        self._hashes = list(hashes)
        if size < 0 or len(self._hashes) != size.bit_count():
            raise ValueError(f"a frontier of {size} leaves has {size.bit_count()} hashes")
        if any(len(h) != HASH_SIZE for h in self._hashes):
            raise ValueError(f"a hash has {HASH_SIZE} bytes")

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes")
        node, index = leaf, self._size
        # As in Tree.append: each low set bit of the index is a complete sibling to merge with.
        while index & 1:
            node = node_hash(self._hashes.pop(), node)
            index >>= 1
        self._hashes.append(node)
        self._size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        node = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> Frontier:
        return Frontier(self._size, self._hashes)
