"""Named, parameterised queries. The CLI and the worker's HTTP API call these same functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.store.client import QueryResult, Store

TIMELINE_COLUMNS = (
    "time", "type", "action", "outcome", "target_kind", "target_id", "actor_id", "actor_assurance",
    "links", "id",
)  # fmt: skip


def timeline(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    target: str | None = None,
    scope: str | None = None,
    limit: int = 1000,
) -> QueryResult:
    """Events in time order, optionally bounded in time and filtered by target id or name."""
    where = ["1"]
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        where.append("time >= {since:DateTime64(6, 'UTC')}")
        params["since"] = since
    if until is not None:
        where.append("time <= {until:DateTime64(6, 'UTC')}")
        params["until"] = until
    if target:
        where.append("(target_id = {target:String} OR target_name = {target:String})")
        params["target"] = target
    if scope:
        where.append("scope = {scope:String}")
        params["scope"] = scope
    sql = (
        f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM {store.database}.events "
        f"WHERE {' AND '.join(where)} ORDER BY time, id LIMIT {{limit:UInt32}}"
    )
    return store.query(sql, params)


def stats(store: Store) -> dict[str, int]:
    """Row counts of the main tables (for ``causelog status``)."""
    db = store.database
    events = store.query(f"SELECT count() FROM {db}.events").rows[0][0]
    links = store.query(f"SELECT count() FROM {db}.event_links").rows[0][0]
    return {"events": int(events), "event_links": int(links)}
