"""Named, parameterised queries. The CLI and the worker's HTTP API call these same functions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pipeline.correlate import explain
from pipeline.correlate.topology import Topology
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


def _dicts(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def why(
    store: Store,
    target: str,
    *,
    at: datetime,
    window: timedelta,
    topology: Topology | None = None,
    limit: int = 20,
    chain_depth: int = 3,
    chain_limit: int = 200,
) -> dict[str, Any]:
    """Changes to ``target`` and its related things (matched on target id or service) in the
    ``window`` before ``at``, ranked, each with its chain as the worker stored it (events up to
    ``at``, at most ``chain_limit``). Events stored before the worker correlated have no chain id;
    for those the chain is the events reachable through shared link keys (``chain_depth`` hops)."""
    topology = topology or Topology()
    names = sorted(topology.related(target))
    db = store.database
    cols = ", ".join(TIMELINE_COLUMNS)
    span = {"lo": at - window, "at": at}
    candidates = _dicts(store.query(
        f"SELECT {cols}, chain_id FROM {db}.events WHERE time >= {{lo:DateTime64(6, 'UTC')}} "
        "AND time <= {at:DateTime64(6, 'UTC')} AND (target_id IN {names:Array(String)} "
        "OR target_service IN {names:Array(String)}) "
        "ORDER BY time DESC, id LIMIT 10000",
        {**span, "names": names},
    ))
    chains = stored_chains(store, candidates, at=at, limit=chain_limit)
    legacy = [c for c in candidates if str(c["id"]) not in chains]
    if legacy:  # stored before the worker correlated: chains from shared link keys at query time
        events = _expand(store, legacy, at=at, depth=chain_depth, cap=chain_limit * len(legacy))
        chains.update({str(c["id"]): _component(str(c["id"]), events, chain_limit) for c in legacy})
    causes = explain.rank(candidates, chains, at=at, window_seconds=window.total_seconds(), limit=limit)
    return {
        "target": target,
        "related": names,
        "at": at,
        "window_seconds": window.total_seconds(),
        "causes": [
            {"score": c.score, "event": c.event, "story": c.story, "chain": c.chain} for c in causes
        ],
    }


def _expand(
    store: Store, seeds: list[dict[str, Any]], *, at: datetime | None, depth: int, cap: int
) -> dict[str, dict[str, Any]]:
    """``seeds`` plus the events reachable from them through shared link keys, hop by hop
    (at most ``depth`` hops, about ``cap`` events, none later than ``at`` when given)."""
    db = store.database
    cols = ", ".join(TIMELINE_COLUMNS)
    events: dict[str, dict[str, Any]] = {str(e["id"]): e for e in seeds}
    frontier = {link for e in seeds for link in e["links"]}
    seen_keys: set[str] = set()
    bound = "AND time <= {at:DateTime64(6, 'UTC')}" if at is not None else ""
    for _ in range(depth):
        frontier -= seen_keys
        if not frontier or len(events) >= cap:
            break
        seen_keys |= frontier
        params: dict[str, Any] = {"keys": sorted(frontier), "cap": cap}
        if at is not None:
            params["at"] = at
        found = _dicts(store.query(
            f"SELECT {cols} FROM {db}.events WHERE id IN (SELECT event_id FROM {db}.event_links "
            f"WHERE key IN {{keys:Array(String)}} {bound}) ORDER BY time LIMIT {{cap:UInt32}}",
            params,
        ))
        frontier = set()
        for e in found:
            if str(e["id"]) not in events:
                events[str(e["id"])] = e
                frontier.update(e["links"])
    return events


def chain(store: Store, event_id: str, *, depth: int = 6, limit: int = 500) -> dict[str, Any]:
    """The chain of an event (DESIGN.md §3) as the worker stored it: the chain id (its earliest
    event, aliases resolved), its events in time order (at most ``limit``; ``truncated`` says if
    there were more) and its live typed edges (``from`` points to its predecessor on ``key``).

    An event stored before the worker correlated has no chain id; its chain is then computed
    from shared link keys (``depth`` hops), with edges between consecutive events of each key.
    """
    db = store.database
    start = _dicts(store.query(
        f"SELECT {', '.join(TIMELINE_COLUMNS)}, chain_id FROM {db}.events WHERE id = {{id:String}} LIMIT 1",
        {"id": event_id},
    ))
    if not start:
        return {"chain_id": None, "events": [], "edges": [], "truncated": False}
    if start[0]["chain_id"]:
        root = _roots(store, {start[0]["chain_id"]})[start[0]["chain_id"]]
        members = _members(store, {root}, at=None, limit=limit + 1)[root]
        truncated = len(members) > limit
        members = members[:limit]
        return {"chain_id": root, "events": members, "edges": _edges(store, [str(e["id"]) for e in members]),
                "truncated": truncated}
    members = _component(event_id, _expand(store, start, at=None, depth=depth, cap=limit), limit)
    edges = []
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in members:  # already in (time, id) order
        for link in e["links"]:
            by_key.setdefault(link, []).append(e)
    for key, evs in sorted(by_key.items()):
        for before, after in zip(evs, evs[1:], strict=False):
            edges.append({"key": key, "key_type": key.partition(":")[0], "from": after["id"], "to": before["id"]})
    return {"chain_id": members[0]["id"], "events": members, "edges": edges, "truncated": len(members) >= limit}


def stored_chains(
    store: Store, events: list[dict[str, Any]], *, at: datetime | None, limit: int
) -> dict[str, list[dict[str, Any]]]:
    """For each event (a row with ``id`` and ``chain_id``) that has a stored chain: the events of
    that chain, in time order, none later than ``at``, at most ``limit`` per chain."""
    own = {str(e["id"]): str(e["chain_id"]) for e in events if e.get("chain_id")}
    if not own:
        return {}
    roots = _roots(store, set(own.values()))
    members = _members(store, set(roots.values()), at=at, limit=limit)
    return {eid: members[roots[c]] for eid, c in own.items()}


def _roots(store: Store, chain_ids: set[str]) -> dict[str, str]:
    """The current id of each chain: aliases followed to the end (one query per merge level)."""
    db = store.database
    alias: dict[str, str] = {}
    asked: set[str] = set()
    frontier = set(chain_ids)
    while frontier:
        asked |= frontier
        rows = store.query(
            f"SELECT DISTINCT old_chain_id, new_chain_id FROM {db}.chain_aliases "
            "WHERE old_chain_id IN {ids:Array(String)}", {"ids": sorted(frontier)},
        ).rows
        alias.update((str(o), str(n)) for o, n in rows)
        frontier = {str(n) for _, n in rows} - asked
    out = {}
    for c in chain_ids:
        r = c
        for _ in range(len(alias) + 1):  # aliases never cycle; bound the walk anyway
            if r not in alias:
                break
            r = alias[r]
        out[c] = r
    return out


def _members(store: Store, roots: set[str], *, at: datetime | None, limit: int) -> dict[str, list[dict[str, Any]]]:
    """Events of each root chain (every chain id aliased into it included), time order."""
    db = store.database
    owner = {r: r for r in roots}
    frontier = set(roots)
    while frontier:
        rows = store.query(
            f"SELECT DISTINCT old_chain_id, new_chain_id FROM {db}.chain_aliases "
            "WHERE new_chain_id IN {ids:Array(String)}", {"ids": sorted(frontier)},
        ).rows
        frontier = set()
        for old, new in rows:
            if str(old) not in owner:
                owner[str(old)] = owner[str(new)]
                frontier.add(str(old))
    params: dict[str, Any] = {"ids": sorted(owner), "limit": limit}
    bound = ""
    if at is not None:
        bound = "AND time <= {at:DateTime64(6, 'UTC')}"
        params["at"] = at
    found = _dicts(store.query(
        f"SELECT {', '.join(TIMELINE_COLUMNS)}, chain_id FROM {db}.events "
        f"WHERE chain_id IN {{ids:Array(String)}} {bound} ORDER BY time, id",
        params,
    ))
    out: dict[str, list[dict[str, Any]]] = {r: [] for r in roots}
    for e in found:
        bucket = out[owner[str(e.pop("chain_id"))]]
        if len(bucket) < limit:
            bucket.append(e)
    return out


def _edges(store: Store, event_ids: list[str]) -> list[dict[str, Any]]:
    """Live edges leaving ``event_ids`` (retracted ones dropped, repeated rows collapsed)."""
    if not event_ids:
        return []
    rows = store.query(
        f"SELECT key, key_type, from_event, to_event FROM {store.database}.chain_edges "
        "WHERE from_event IN {ids:Array(String)} GROUP BY key, key_type, from_event, to_event "
        "HAVING max(removed) = 0 ORDER BY key, from_event, to_event",
        {"ids": event_ids},
    ).rows
    return [{"key": k, "key_type": kt, "from": f, "to": t} for k, kt, f, t in rows]


def _component(start: str, events: dict[str, dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """Events reachable from ``start`` through shared link keys, in time order."""
    by_key: dict[str, list[str]] = {}
    for eid, e in events.items():
        for link in e["links"]:
            by_key.setdefault(link, []).append(eid)
    seen = {start}
    todo = [start]
    while todo and len(seen) < cap:
        for link in events[todo.pop()]["links"]:
            for other in by_key.get(link, ()):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
    return sorted((events[i] for i in seen), key=lambda e: (e["time"], e["id"]))
