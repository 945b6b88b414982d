"""Current roots of merged chains, from merges (aliases) and the roots already stored.

The reducer (:mod:`pipeline.correlate.reducer`) always keeps, of two merging chains, the one
whose head ``(time, id)`` is earliest. So the chains connected by merges form one chain whose
root is the member with the earliest known head, whatever order the merges were seen in. The
writer stores that root for every merged chain (``chain_roots``, 009_chain_roots.sql) so readers
need one lookup instead of walking the aliases level by level; this module computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple


class Link(NamedTuple):
    """``chain`` is part of ``into`` (whose head is at ``into_head_us``; chain ids are the id of
    the head event, so two chains never share an id)."""

    chain: str
    into: str
    into_head_us: int


def resolve(links: Iterable[Link]) -> dict[str, tuple[str, int]]:
    """``{chain: (root, root head µs)}`` for every chain named by ``links`` that is not itself its
    chain's root. The root of a set of connected chains is the one with the least
    ``(head time, id)`` among those whose head is known (every ``into`` has one)."""
    parent: dict[str, str] = {}
    heads: dict[str, int] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for link in links:
        heads[link.into] = min(link.into_head_us, heads.get(link.into, link.into_head_us))
        a, b = find(link.chain), find(link.into)
        if a != b:
            parent[a] = b
    best: dict[str, tuple[int, str]] = {}
    for chain, head in heads.items():
        r = find(chain)
        if r not in best or (head, chain) < best[r]:
            best[r] = (head, chain)
    out: dict[str, tuple[str, int]] = {}
    for chain in parent:
        head, root = best[find(chain)]
        if root != chain:
            out[chain] = (root, head)
    return out


def changed(
    resolved: Mapping[str, tuple[str, int]], stored: Mapping[str, tuple[str, int]]
) -> dict[str, tuple[str, int]]:
    """The entries of ``resolved`` whose chain's ``stored`` current root differs (the rows to add)."""
    return {c: r for c, r in resolved.items() if stored.get(c) != r}
