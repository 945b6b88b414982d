"""Offline reference of DESIGN.md §3 over a whole, finite set of events (no expiry, no window).

Used by the tests to check the streaming reducer, and by the benchmark for comparison. It holds
every event in memory: never use it on a stream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pipeline.correlate.reducer import Correlatable
from pipeline.model.event import to_micros


def components(events: Iterable[Correlatable]) -> dict[str, str]:
    """``{event id: chain id}``: connected components over shared link keys, each identified by
    its earliest event by ``(time, id)``. An event without links is its own chain. Events seen
    twice (same id) count once.
    """
    head: dict[str, tuple[int, str]] = {}  # event id -> its (time, id)
    by_key: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e.id in head:
            continue
        head[e.id] = (to_micros(e.time), e.id)
        for k in dict.fromkeys(e.links):
            by_key[k].append(e.id)

    parent = {eid: eid for eid in head}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for ids in by_key.values():
        first = find(ids[0])
        for other in ids[1:]:
            r = find(other)
            if r != first:
                # Union keeps the earlier head as root so the root is the chain id.
                if head[r] < head[first]:
                    parent[first] = r
                    first = r
                else:
                    parent[r] = first
    return {eid: find(eid) for eid in head}


def key_edges(events: Iterable[Correlatable]) -> set[tuple[str, str, str]]:
    """Every causal edge ``(key, later event, its predecessor on key)``: per key, the events
    carrying it sorted by ``(time, id)``, each pointing to the one before."""
    seen: set[str] = set()
    by_key: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for e in events:
        if e.id in seen:
            continue
        seen.add(e.id)
        t = to_micros(e.time)
        for k in dict.fromkeys(e.links):
            by_key[k].append((t, e.id))
    out: set[tuple[str, str, str]] = set()
    for k, entries in by_key.items():
        entries.sort()
        for (_, prev), (_, cur) in zip(entries, entries[1:], strict=False):
            out.add((k, cur, prev))
    return out
