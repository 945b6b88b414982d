"""The ``chain_roots`` table (009_chain_roots.sql): every merged chain's current root, written
with the merges so that readers resolve a chain in one lookup (:func:`roots`, :func:`members_of`)
instead of walking ``chain_aliases`` one level of merges per query."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.correlate.partition import AliasRow
from pipeline.correlate.roots import Link, changed, resolve
from pipeline.store.client import Store

ROOT_COLUMNS = ("scope", "chain_id", "root_id", "root_time")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(value: Any) -> int:
    """µs since the epoch of a DateTime64 value as ClickHouse returns it (naive means UTC)."""
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def record(store: Store, aliases: Sequence[AliasRow], *, token: str | None = None, max_rounds: int = 8) -> int:
    """Add ``chain_roots`` rows for the merges ``aliases`` say happened: the merged chains, and
    every chain already merged into one of them, now point at the root of what they joined
    (late merges and merges into a chain that was itself merged included). Returns the rows added.

    Reads what is stored about the chains named (their current roots, and the chains whose
    root they are), resolves with :func:`pipeline.correlate.roots.resolve` and writes only the
    rows that change an answer. Safe to repeat: a row already stored is a no-op for readers."""
    if not aliases:
        return 0
    db = store.database
    scope = {a.old_chain_id: a.scope for a in aliases} | {a.new_chain_id: a.scope for a in aliases}
    links = [Link(a.old_chain_id, a.new_chain_id, a.new_head_us) for a in aliases]
    named = sorted(scope)
    stored = current(store, named)  # chain -> its current root as stored
    below: list[Link] = []  # chains stored as merged into a chain named here
    asked: set[str] = set()
    frontier = {a.old_chain_id for a in aliases}
    for _ in range(max_rounds):
        # A chain that was a root (no row of its own) and is no longer one: its members move too.
        if frontier:
            asked |= frontier
            for chain_id, root_id, root_time, sc in store.query(
                f"SELECT chain_id, root_id, min(root_time), any(scope) FROM {db}.chain_roots "
                "WHERE root_id IN {ids:Array(String)} GROUP BY chain_id, root_id",
                {"ids": sorted(frontier)},
            ).rows:
                below.append(Link(str(chain_id), str(root_id), _us(root_time)))
                scope.setdefault(str(chain_id), str(sc))
                stored.setdefault(str(chain_id), (str(root_id), _us(root_time)))
        resolved = resolve([*links, *(Link(c, r, t) for c, (r, t) in stored.items()), *below])
        has_row = set(stored) | {link.chain for link in below}
        frontier = {c for c in resolved if c not in has_row} - asked
        frontier |= {r for r, _ in stored.values() if r in resolved} - asked
        if not frontier:
            break
    rows = changed(resolved, stored)
    if rows:
        cols: list[list[Any]] = [[scope.get(c, "") for c in rows], list(rows), [r for r, _ in rows.values()],
                [t for _, t in rows.values()]]
        store.insert("chain_roots", cols, ROOT_COLUMNS, column_oriented=True,
                     token=token + ":roots" if token else None)
    return len(rows)


def current(store: Store, chains: Iterable[str]) -> dict[str, tuple[str, int]]:
    """``{chain: (root, root head µs)}`` of those ``chains`` that were merged into another one
    (a chain not in the answer is its own root): one lookup."""
    ids = sorted(set(chains))
    if not ids:
        return {}
    rows = store.query(
        f"SELECT chain_id, argMin(root_id, (root_time, root_id)), min(root_time) FROM {store.database}.chain_roots "
        "WHERE chain_id IN {ids:Array(String)} GROUP BY chain_id",
        {"ids": ids},
    ).rows
    return {str(c): (str(r), _us(t)) for c, r, t in rows}


def roots(store: Store, chains: Mapping[str, datetime]) -> dict[str, tuple[str, datetime]]:
    """The current id and head time (aware, UTC) of each chain (given with its head time as an
    event saw it)."""
    found = current(store, chains)
    out: dict[str, tuple[str, datetime]] = {}
    for c, head in chains.items():
        if c in found:
            r, t = found[c]
            out[c] = (r, _EPOCH + timedelta(microseconds=t))
        else:  # ClickHouse returns naive UTC datetimes: answer aware ones throughout
            out[c] = (c, head if head.tzinfo is not None else head.replace(tzinfo=UTC))
    return out


def members_of(store: Store, roots_: Iterable[str]) -> dict[str, str]:
    """Every chain id merged (transitively) into one of ``roots_`` (current roots), mapped to its
    root, the roots themselves included: one lookup."""
    owner = {r: r for r in roots_}
    if not owner:
        return owner
    best: dict[str, tuple[int, str]] = {}
    for chain_id, root_id, root_time in store.query(
        f"SELECT chain_id, root_id, min(root_time) FROM {store.database}.chain_roots "
        "WHERE root_id IN {ids:Array(String)} GROUP BY chain_id, root_id",
        {"ids": sorted(owner)},
    ).rows:
        # Two of the asked roots for one chain only when a caller passes a root that has since
        # been merged: the earlier head is the current one.
        key = (_us(root_time), str(root_id))
        c = str(chain_id)
        if c not in owner and (c not in best or key < best[c]):
            best[c] = key
    owner.update({c: r for c, (_, r) in best.items()})
    return owner
