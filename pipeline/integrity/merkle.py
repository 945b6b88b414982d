"""RFC 6962 / RFC 9162 Merkle trees: leaf and node hashes, a compact frontier, tree hashes of
ranges, inclusion and consistency proofs and their verifiers. Pure.

- leaf hash ``SHA-256(0x00 || bytes)``, interior node ``SHA-256(0x01 || left || right)``;
- the tree of ``n`` leaves splits at ``k``, the largest power of two smaller than ``n``
  (RFC 6962 §2.1), so the tree of the first ``m`` leaves is a prefix of every larger one;
- proofs list their hashes leaf level first (RFC 6962 §2.1.1, §2.1.2; the verifiers follow
  RFC 9162 §2.1.3.2 and §2.1.4.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pipeline.errors import IntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() (RFC 6962 §2.1)."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: one hash per set bit of ``size`` (the roots of its
    perfect subtrees, largest first). Appends cost O(1) hashes amortised; :meth:`root` O(log n)."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise IntegrityError(f"a frontier of size {size} has {bin(max(size, 0)).count('1')} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def copy(self) -> Frontier:
        """An independent copy (appends to it leave this one alone)."""
        return Frontier(self.size, self.hashes)

    def append(self, leaf: bytes) -> None:
        """Add the leaf hash ``leaf`` as leaf number ``size``."""
        h = leaf
        hashes = self.hashes
        n = self.size
        # Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while n & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self.hashes:
            return EMPTY_ROOT
        h = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            h = _sha256(b"\x01" + left + h).digest()
        return h


class Tree:
    """Every leaf hash of a log, with the perfect subtrees hashed once, so the tree hash of any
    range and the proofs of any size are cheap. ``levels[j][i]`` is the hash of leaves
    ``[i * 2**j, (i + 1) * 2**j)``."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            level = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            self.levels.append(level)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def range_hash(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for ``0 <= lo <= hi <= size``."""
        if not 0 <= lo <= hi <= self.size:
            raise IntegrityError(f"range [{lo}, {hi}) is outside a tree of {self.size} leaves")
        return self._hash(lo, hi)

    def _hash(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            return self.levels[n.bit_length() - 1][lo // n]
        if n == 1:
            return self.levels[0][lo]
        k = _split(n)
        return node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default all)."""
        return self.range_hash(0, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 6962 §2.1.1), leaf level first."""
        if not 0 <= index < size <= self.size:
            raise IntegrityError(f"no inclusion proof of leaf {index} in a tree of {size} (log has {self.size})")
        out: list[bytes] = []
        self._path(index, 0, size, out)
        return out

    def _path(self, m: int, lo: int, hi: int, out: list[bytes]) -> None:
        if hi - lo <= 1:
            return
        k = _split(hi - lo)
        if m < lo + k:
            self._path(m, lo, lo + k, out)
            out.append(self._hash(lo + k, hi))
        else:
            self._path(m, lo + k, hi, out)
            out.append(self._hash(lo, lo + k))

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """PROOF(old, D[0:new]) (RFC 6962 §2.1.2); empty when ``old`` is 0 or equals ``new``."""
        if not 0 <= old <= new <= self.size:
            raise IntegrityError(f"no consistency proof from {old} to {new} (log has {self.size})")
        out: list[bytes] = []
        if 0 < old < new:
            self._subproof(old, 0, new, True, out)
        return out

    def _subproof(self, m: int, lo: int, hi: int, whole: bool, out: list[bytes]) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(self._hash(lo, hi))
            return
        k = _split(n)
        if m <= k:
            self._subproof(m, lo, lo + k, whole, out)
            out.append(self._hash(lo + k, hi))
        else:
            self._subproof(m - k, lo + k, hi, False, out)
            out.append(self._hash(lo, lo + k))


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2); ``IntegrityError`` if the
    proof cannot belong to leaf ``index`` of a tree of ``size``."""
    if not 0 <= index < size:
        raise IntegrityError(f"leaf index {index} is outside a tree of {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if len(p) != HASH_SIZE:
            raise IntegrityError(f"proof hash of {len(p)} bytes, expected {HASH_SIZE}")
        if sn == 0:
            raise IntegrityError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``IntegrityError`` unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree
    of ``size`` whose root is ``root``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise IntegrityError(f"inclusion proof of leaf {index} does not lead to the root of tree size {size}")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``IntegrityError`` unless ``proof`` shows the tree of ``old`` leaves (``old_root``)
    is a prefix of the tree of ``new`` leaves (``new_root``) (RFC 9162 §2.1.4.2)."""
    if not 0 <= old <= new:
        raise IntegrityError(f"consistency from size {old} to smaller size {new}")
    if old == new:
        if proof or old_root != new_root:
            raise IntegrityError(f"two different roots for the same size {old}")
        return
    if old == 0:
        if proof:
            raise IntegrityError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise IntegrityError(f"empty consistency proof from {old} to {new}")
    path = list(proof)
    if old & (old - 1) == 0:  # old is a power of two: its root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError(f"consistency proof from {old} to {new} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError(f"consistency proof from {old} to {new} is too short")
    if fr != old_root:
        raise IntegrityError(f"the tree of size {new} does not extend the checkpointed tree of size {old}")
    if sr != new_root:
        raise IntegrityError(f"consistency proof from {old} to {new} does not lead to the root of size {new}")
