"""RFC 6962 trees: the frontier, range hashes and proofs against a naive recursive
implementation written from the RFC's definitions, and tampered proofs rejected."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import IntegrityError
from pipeline.integrity.merkle import (
    EMPTY_ROOT,
    Frontier,
    Tree,
    leaf_hash,
    root_from_inclusion,
    verify_consistency,
    verify_inclusion,
)


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 §2.1 defines it, over the input entries."""
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = k_of(len(d))
    return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1."""
    if len(d) <= 1:
        return []
    k = k_of(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


entries = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


def test_hash_definitions() -> None:
    assert leaf_hash(b"x") == sha(b"\x00x")
    assert EMPTY_ROOT == sha(b"") == Frontier().root() == Tree([]).root()
    # RFC 6962 test vector (certificate-transparency-go): the empty leaf
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


@settings(max_examples=150, deadline=None)
@given(entries)
def test_frontier_root_at_every_size_matches_the_definition(d: list[bytes]) -> None:
    f = Frontier()
    for i, e in enumerate(d):
        f.append(leaf_hash(e))
        assert f.size == i + 1
        assert len(f.hashes) == bin(f.size).count("1")
        assert f.root() == mth(d[: i + 1])
    # A frontier rebuilt from its hashes continues the same tree.
    g = Frontier(f.size, f.hashes)
    g.append(leaf_hash(b"more"))
    assert g.root() == mth([*d, b"more"])


@settings(max_examples=150, deadline=None)
@given(entries, st.data())
def test_tree_ranges_and_proofs_match_the_definition(d: list[bytes], data: st.DataObject) -> None:
    tree = Tree([leaf_hash(e) for e in d])
    lo = data.draw(st.integers(0, len(d)))
    hi = data.draw(st.integers(lo, len(d)))
    assert tree.range_hash(lo, hi) == mth(d[lo:hi])
    n = data.draw(st.integers(1, len(d)))
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m, n)
    assert proof == path(m, d[:n])
    verify_inclusion(m, n, leaf_hash(d[m]), proof, mth(d[:n]))
    old = data.draw(st.integers(1, n))
    cproof = tree.consistency_proof(old, n)
    assert cproof == (subproof(old, d[:n], True) if old < n else [])
    verify_consistency(old, n, mth(d[:old]), mth(d[:n]), cproof)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=4), min_size=2, max_size=40), st.data())
def test_tampered_proofs_fail(d: list[bytes], data: st.DataObject) -> None:
    tree = Tree([leaf_hash(e) for e in d])
    n = len(d)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(m, n)
    root = tree.root()
    with pytest.raises(IntegrityError):
        verify_inclusion(m, n, leaf_hash(d[m] + b"!"), proof, root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = sha(bad[i])
        with pytest.raises(IntegrityError):
            verify_inclusion(m, n, leaf_hash(d[m]), bad, root)
        with pytest.raises(IntegrityError):
            verify_inclusion(m, n, leaf_hash(d[m]), proof[:-1], root)
    old = data.draw(st.integers(1, n - 1))
    cproof = tree.consistency_proof(old, n)
    with pytest.raises(IntegrityError):
        verify_consistency(old, n, sha(b"other"), root, cproof)
    with pytest.raises(IntegrityError):
        verify_consistency(old, n, tree.root(old), sha(b"other"), cproof)
    forked = Tree([leaf_hash(e) for e in [*d[:old], b"fork", *d[old + 1 :]]]) if old < n else tree
    if forked.root() != root:
        with pytest.raises(IntegrityError):
            verify_consistency(old, n, tree.root(old), forked.root(), cproof)


def test_rejects_impossible_arguments() -> None:
    with pytest.raises(IntegrityError):
        Frontier(3, [b"x" * 32])
    with pytest.raises(IntegrityError):
        root_from_inclusion(5, 5, b"x" * 32, [])
    with pytest.raises(IntegrityError):
        Tree([b"x" * 32]).inclusion_proof(0, 2)
    with pytest.raises(IntegrityError):
        verify_consistency(2, 2, b"a" * 32, b"b" * 32, [])
