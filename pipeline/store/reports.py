"""Store side of ``causelog report``: the change events of a period, with their persons and
whether a review is in their chain; :mod:`pipeline.report.accountability` makes the figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.identity import IdentityMap, annotate
from pipeline.report import build_accountability
from pipeline.store import queries
from pipeline.store.client import Store

_COLUMNS = ("id", "time", "type", "action", "target_kind", "target_id", "actor_id", "actor_principal",
            "actor_assurance", "links", "statement", "chain_id", "chain_time")


def accountability(
    store: Store, *, since: datetime, until: datetime, identities: IdentityMap | None = None, cap: int = 200_000
) -> dict[str, Any]:
    """The accountability report of the events in [``since``, ``until``] (at most ``cap`` events,
    reads left out in SQL; ``truncated`` says when there were more)."""
    db = store.database
    span = {"since": since, "until": until, "cap": cap + 1}
    rows = [dict(zip(_COLUMNS, r, strict=True)) for r in store.query(
        f"SELECT {', '.join(_COLUMNS)} FROM {db}.events WHERE time >= {{since:DateTime64(6, 'UTC')}} "
        "AND time <= {until:DateTime64(6, 'UTC')} AND type != 'db.query' AND NOT endsWith(type, '.read') "
        "ORDER BY time, id LIMIT {cap:UInt32}", span).rows]
    truncated = len(rows) > cap
    rows = rows[:cap]
    reviews = {str(c): t for c, t in store.query(
        f"SELECT chain_id, min(chain_time) FROM {db}.events WHERE startsWith(type, 'change.review') "
        "AND chain_id != '' AND time <= {until:DateTime64(6, 'UTC')} GROUP BY chain_id", span).rows}
    reviewed_roots = {root for root, _ in queries.chain_roots(store, reviews).values()}
    roots = queries.chain_roots(store, {str(r["chain_id"]): r["chain_time"] for r in rows if r["chain_id"]})
    for r in rows:
        r["reviewed"] = bool(r["chain_id"]) and roots[str(r["chain_id"])][0] in reviewed_roots
    if identities is not None:
        rows = [annotate(r, identities) for r in rows]
    report = build_accountability(rows, since=since, until=until)
    report["truncated"] = truncated
    return report
