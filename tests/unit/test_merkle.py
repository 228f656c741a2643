"""The audit log's Merkle tree: the RFC 6962 reference roots, and every proof it makes is one
the stand-alone verifier accepts, and refuses with any one bit changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import verify_audit as v
from consent.rules.merkle import EMPTY_ROOT, Frontier, Tree, leaf_hash

REFERENCE = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "rfc9162" / "reference.json").read_text()
)


def _tree(size: int) -> Tree:
    return Tree(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size))


def _flip(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_the_reference_roots() -> None:
    tree = Tree(leaf_hash(bytes.fromhex(x)) for x in REFERENCE["leaf_inputs"])
    roots = [tree.root(size).hex() for size in range(tree.size + 1)]
    assert roots == REFERENCE["roots"]
    assert Tree().root() == EMPTY_ROOT


def test_the_tree_grows_one_leaf_at_a_time_and_remembers_every_size() -> None:
    tree, roots = Tree(), []
    for i in range(40):
        tree.append(hashlib.sha256(i.to_bytes(4, "big")).digest())
        roots.append(tree.root())
    assert [tree.root(size) for size in range(1, 41)] == roots
    with pytest.raises(ValueError):
        tree.root(41)
    with pytest.raises(ValueError):
        tree.append(b"short")


sizes = st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1)))


def _one_bit_off(proof: list[bytes], bit: int) -> list[bytes]:
    at = bit % len(proof)
    return [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]


def _all_refused(verify: Callable[..., None], variants: list[tuple[Any, ...]]) -> None:
    for args in variants:
        with pytest.raises(v.VerificationError):
            verify(*args)


@settings(max_examples=200, deadline=None)
@given(sizes, st.integers(0, 10**6))
def test_inclusion_proofs_verify_and_any_changed_bit_fails(case: tuple[int, int], bit: int) -> None:
    size, index = case
    tree = _tree(size + 5)  # proofs for an earlier size of a larger tree
    proof, root = tree.inclusion_proof(index, size), tree.root(size)
    own = hashlib.sha256(index.to_bytes(4, "big")).digest()
    v.verify_inclusion(own, index, size, proof, root)
    variants = [
        (_flip(own, bit), index, size, proof, root),
        (own, index, size, proof, _flip(root, bit)),
    ]
    if proof:
        variants.append((own, index, size, _one_bit_off(proof, bit), root))
    _all_refused(v.verify_inclusion, variants)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 300).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))),
    st.integers(0, 10**6),
)
def test_consistency_proofs_verify_and_any_changed_bit_fails(
    sizes: tuple[int, int], bit: int
) -> None:
    size1, size2 = sizes
    tree = _tree(size2 + 3)
    proof = tree.consistency_proof(size1, size2)
    root1, root2 = tree.root(size1), tree.root(size2)
    v.verify_consistency(size1, size2, proof, root1, root2)
    variants = [
        (size1, size2, proof, _flip(root1, bit), root2),
        (size1, size2, proof, root1, _flip(root2, bit)),
    ]
    if proof:
        variants.append((size1, size2, _one_bit_off(proof, bit), root1, root2))
    _all_refused(v.verify_consistency, variants)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 70), min_size=1, max_size=4))
def test_the_frontier_gives_the_trees_root_at_every_size_and_resumes_from_its_hashes(
    sizes: list[int],
) -> None:
    """What a checkpoint carries (the right edge) is enough to continue the tree: resumed at
    any size, the frontier gives the same roots as the whole tree."""
    total = sum(sizes)
    tree = _tree(total)
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(total)]
    done = 0
    for size in sizes:
        frontier = Frontier(frontier.size, frontier.hashes)  # resumed, as a new process does
        for leaf in leaves[done : done + size]:
            frontier.append(leaf)
            assert frontier.root() == tree.root(frontier.size)
        done += size
    assert len(frontier.hashes) == total.bit_count()


def test_a_frontier_with_the_wrong_number_of_hashes_is_refused() -> None:
    with pytest.raises(ValueError, match="3 hashes"):
        Frontier(7, [bytes(32)] * 2)
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier(1, [bytes(31)])
