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


def linked(store: Store, key_type: str, ident: str, *, limit: int = 1000) -> QueryResult:
    """Events carrying the link ``<key_type>:<ident>``, or ``<key_type>:<system>:...:<ident>``.

    Session keys name their system (``session:postgres:pg1:6560a1b2.3f1``); the id alone is
    enough, and a longer suffix (``pg1:6560a1b2.3f1``) narrows it down.
    """
    db = store.database
    sql = (
        f"SELECT {', '.join('e.' + c for c in TIMELINE_COLUMNS)} FROM {db}.events AS e "
        f"WHERE e.id IN (SELECT event_id FROM {db}.event_links WHERE key_type = {{kt:String}} "
        "AND (key = {exact:String} OR endsWith(key, {suffix:String}))) "
        "ORDER BY e.time, e.id LIMIT {limit:UInt32}"
    )
    return store.query(sql, {"kt": key_type, "exact": f"{key_type}:{ident}", "suffix": f":{ident}", "limit": limit})


def who(
    store: Store,
    actor: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> QueryResult:
    """What an actor did: events whose actor id, principal or display name is ``actor``."""
    where = ["(actor_id = {a:String} OR actor_principal = {a:String} OR actor_display = {a:String})"]
    params: dict[str, Any] = {"a": actor, "limit": limit}
    if since is not None:
        where.append("time >= {since:DateTime64(6, 'UTC')}")
        params["since"] = since
    if until is not None:
        where.append("time <= {until:DateTime64(6, 'UTC')}")
        params["until"] = until
    sql = (
        f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM {store.database}.events "
        f"WHERE {' AND '.join(where)} ORDER BY time, id LIMIT {{limit:UInt32}}"
    )
    return store.query(sql, params)
