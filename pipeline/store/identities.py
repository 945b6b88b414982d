"""Learned identity joins in ClickHouse (table ``identities``, schemas/clickhouse/005_identities.sql).

:func:`write_joins` stores what :func:`pipeline.identity.learn` found; :func:`load_identity_map`
reads every stored join back and builds the :class:`~pipeline.identity.IdentityMap` with the
configured people. Writes are idempotent: the table's sort key is the whole join, and reads
group by it, so writing the same join again (a replayed source, a retried batch) changes nothing
a reader can see.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import cast

from pipeline.identity import STRENGTHS, IdentityConfig, IdentityMap, Join, Strength, load_identities
from pipeline.store.client import Store

COLUMNS = ("principal_a", "principal_b", "strength", "system", "rule", "event_id")


def write_joins(store: Store, joins: Iterable[Join]) -> int:
    """Insert ``joins`` (repeats in the input are written once); returns how many rows were sent."""
    rows = sorted({(j.a, j.b, j.strength, j.system, j.rule, j.event_id) for j in joins})
    if rows:
        store.insert("identities", [list(r) for r in rows], COLUMNS)
    return len(rows)


def read_joins(store: Store) -> list[Join]:
    """Every distinct stored join, sorted, each with its smallest evidence event id.

    A join seen in many events (every push of one person) is one row: the evidence kept is the
    minimum event id, which does not depend on insert order or on whether parts were merged
    (merges only drop rows identical in every key column, so the set of event ids is the same).
    """
    db = store.database
    result = store.query(
        f"SELECT principal_a, principal_b, strength, system, rule, min(event_id) FROM {db}.identities "
        "GROUP BY principal_a, principal_b, strength, system, rule "
        "ORDER BY principal_a, principal_b, strength, system, rule"
    )
    out: list[Join] = []
    for a, b, strength, system, rule, event_id in result.rows:
        if strength not in STRENGTHS:
            continue  # written by a newer version with a strength this one does not know
        out.append(Join(str(a), str(b), cast(Strength, strength), str(system), str(rule), str(event_id)))
    return out


def load_identity_map(
    store: Store, config: IdentityConfig | None = None, *, strengths: Iterable[Strength] = STRENGTHS
) -> IdentityMap:
    """The identity map of ``config`` plus every stored join of an accepted strength."""
    return IdentityMap.build(config, read_joins(store), strengths=strengths)


def identity_map(store: Store, path: Path) -> IdentityMap:
    """The identity map the queries use: ``identities.yaml`` at ``path`` (absent: no configured
    people) plus every join stored so far. ``ConfigError`` names a bad entry of the file."""
    return load_identity_map(store, load_identities(path))
