"""Named, parameterised queries. The CLI and the worker's HTTP API call these same functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.correlate import explain, ranking, targets
from pipeline.correlate.topology import Topology
from pipeline.identity import IdentityMap, Person, annotate, person_summary, sessions
from pipeline.store import chain_roots as roots_table
from pipeline.store.client import QueryResult, Store

TIMELINE_COLUMNS = (
    "time", "type", "action", "outcome", "target_kind", "target_id", "actor_id", "actor_assurance",
    "links", "id",
)  # fmt: skip


# What why/chain show of each event: the timeline columns, who exactly (for the identity map),
# and the two things an incident reader wants without opening the envelope: the config diff
# and a database statement (normalised: never a literal).
DETAIL_COLUMNS = (*TIMELINE_COLUMNS, "actor_principal", "actor_display")
# ``statement`` and ``has_diff`` are computed at insert (008_incident.sql): only events with a
# diff have their envelope parsed.
DETAIL_SELECT = (
    ", ".join(DETAIL_COLUMNS)
    + ", if(has_diff, JSONExtractRaw(envelope, 'diff'), '') AS diff"
    + ", statement"
)


def _detailed(rows: list[dict[str, Any]], identities: IdentityMap | None) -> list[dict[str, Any]]:
    """Parse ``diff``, blank ``statement`` to None, and add ``person`` when an identity map is given."""
    out = []
    for r in rows:
        diff = r.get("diff")
        if isinstance(diff, str):  # rows may be shared between a cause and a chain: parse once
            r["diff"] = orjson.loads(diff) if diff and diff != "null" else None
        r["statement"] = r.get("statement") or None
        out.append(annotate(r, identities) if identities is not None else r)
    return out


def _time_bounds(where: list[str], params: dict[str, Any], since: datetime | None, until: datetime | None) -> None:
    """Add the optional ``since``/``until`` bounds on ``time`` to a WHERE list and its parameters."""
    if since is not None:
        where.append("time >= {since:DateTime64(6, 'UTC')}")
        params["since"] = since
    if until is not None:
        where.append("time <= {until:DateTime64(6, 'UTC')}")
        params["until"] = until


def timeline(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    target: str | None = None,
    scope: str | None = None,
    limit: int = 1000,
) -> QueryResult:
    """Events in time order, optionally bounded in time and filtered by a target named in any
    form :mod:`pipeline.correlate.targets` accepts (id, name, service, last segment, kind:name)."""
    where = ["1"]
    params: dict[str, Any] = {"limit": limit}
    _time_bounds(where, params, since, until)
    if target:
        where.append("has(target_names, {target:String})")
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
    return {
        t: int(store.query(f"SELECT count() FROM {db}.{t}").rows[0][0])
        for t in ("events", "event_links", "chain_edges", "chain_aliases", "identities")
    }


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
    identities: IdentityMap | None = None,
) -> QueryResult:
    """What an actor did: events whose actor id, principal or display name is ``actor``.

    With ``identities``, ``actor`` may also be a person (``alice``) or any principal of one
    (``github:alice``): the answer then holds the events of every principal of that person, and
    the events done with the credentials of sessions they opened (:func:`_on_behalf`), with an
    extra column ``via`` saying who opened the session (blank for their own events). ``limit``
    applies after rows of someone else's principals are dropped.
    """
    names = {actor}
    person = None
    if identities is not None:
        person = next((p for p in identities.people() if p.id == actor), None) or identities.person_of(actor)
        if person is not None:
            for p in person.principals:
                names.add(p)
                names.add(p.partition(":")[2])  # the raw form most sources store
    where = ["(actor_id IN {a:Array(String)} OR actor_principal IN {a:Array(String)} OR actor_display = {d:String})"]
    params: dict[str, Any] = {"a": sorted(names), "d": actor, "limit": limit}
    _time_bounds(where, params, since, until)
    cols = TIMELINE_COLUMNS if person is None else (*TIMELINE_COLUMNS, "actor_principal")
    sql = (
        f"SELECT {', '.join(cols)} FROM {store.database}.events "
        f"WHERE {' AND '.join(where)} ORDER BY time, id LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}"
    )
    if person is None or identities is None:
        return store.query(sql, {**params, "offset": 0})
    # The raw forms may match someone else's principal in another system: keep this person's,
    # reading page after page so that dropping rows never leaves fewer than ``limit``.
    keep: list[list[Any]] = []
    offset = 0
    while len(keep) < limit:
        page = store.query(sql, {**params, "offset": offset}).rows
        for row in page:
            r = dict(zip(cols, row, strict=True))
            found = identities.person_of_ids(str(r["actor_id"]), str(r["actor_principal"]))
            if found is not None and found.id == person.id and len(keep) < limit:
                keep.append([*row[: len(TIMELINE_COLUMNS)], ""])
        if len(page) < limit:
            break
        offset += limit
    mine = {str(r[9]) for r in keep}
    behalf = [r for r in _on_behalf(store, person, sorted(names), since=since, until=until, identities=identities)
              if str(r[9]) not in mine]
    merged = sorted([*keep, *behalf], key=lambda r: (_aware(r[0]), str(r[9])))[:limit]
    return QueryResult([*TIMELINE_COLUMNS, "via"], merged)


# How long before ``who --since`` a session the person took part in may have started and still
# count (sessions of other systems; AWS sessions are followed through session_issuers).
SESSION_LOOKBACK = timedelta(days=1)

_ISSUER_COLUMNS = ("session", "caller", "event_id", "actor_id", "actor_principal", "actor_assurance", "action", "time")


def _issued_sessions(
    store: Store, names: list[str], until: datetime | None, depth: int
) -> dict[str, dict[str, Any]]:
    """The events that issued sessions to ``names`` (by actor) and, transitively, with those
    sessions' credentials (``session_issuers``, filled at insert), as pseudo-events a
    :class:`~pipeline.identity.sessions.SessionIndex` reads: by event id."""
    db = store.database
    cols = ", ".join(_ISSUER_COLUMNS)  # a row repeated by a retried insert is read once (LIMIT 1 BY)
    bound = " AND time <= {until:DateTime64(6, 'UTC')}" if until is not None else ""
    params: dict[str, Any] = {"a": names, "until": until}
    found = _dicts(store.query(
        f"SELECT {cols} FROM {db}.session_issuers WHERE (actor_id IN {{a:Array(String)}} "
        f"OR actor_principal IN {{a:Array(String)}}){bound} LIMIT 1 BY event_id", params))
    issuers: dict[str, dict[str, Any]] = {}
    for _ in range(depth):
        fresh = [r for r in found if str(r["event_id"]) not in issuers]
        if not fresh:
            break
        for r in fresh:
            issuers[str(r["event_id"])] = r
        found = _dicts(store.query(
            f"SELECT {cols} FROM {db}.session_issuers WHERE caller IN {{keys:Array(String)}}{bound} LIMIT 1 BY event_id",
            {**params, "keys": sorted({str(r["session"]) for r in fresh})}))
    return {eid: {"id": eid, "type": "", "action": r["action"], "actor_id": r["actor_id"],
                  "actor_principal": r["actor_principal"], "actor_assurance": r["actor_assurance"],
                  "time": r["time"], "links": [k for k in (r["caller"], r["session"]) if k],
                  "diff": {"session_issued": {"session": r["session"]}}}
            for eid, r in issuers.items()}


def _on_behalf(
    store: Store, person: Person, names: list[str], *, since: datetime | None, until: datetime | None,
    identities: IdentityMap, depth: int = 6, cap: int = 10_000,
) -> list[list[Any]]:
    """Events done by another principal with the credentials of sessions ``person`` opened: AWS
    role chains through temporary keys (the issuing events are stored in ``session_issuers`` at
    insert), and sessions of other systems (PostgreSQL, Okta...) whose first event is theirs.
    Timeline rows plus ``via`` (who opened the session, what was proven then;
    :mod:`pipeline.identity.sessions`), sessions followed at most ``depth`` hops, at most ``cap`` rows."""
    db = store.database
    issuers = _issued_sessions(store, names, until, depth)
    keys = {str(e["diff"]["session_issued"]["session"]) for e in issuers.values()}
    where = ["(actor_id IN {a:Array(String)} OR actor_principal IN {a:Array(String)})"]
    params: dict[str, Any] = {"a": names, "cap": cap}
    # Sessions of other systems the person took part in, from SESSION_LOOKBACK before ``since``
    # on (reading the person's whole history costs seconds at 10M events): whoever opened them
    # is checked below.
    _time_bounds(where, params, since - SESSION_LOOKBACK if since is not None else None, until)
    keys |= {str(k) for (k,) in store.query(
        f"SELECT DISTINCT arrayJoin(links) AS k FROM {db}.events WHERE {' AND '.join(where)} "
        "AND startsWith(k, 'session:') AND NOT startsWith(k, 'session:aws:') LIMIT {cap:UInt32}", params).rows}
    if not keys:
        return []
    bounds: list[str] = []
    _time_bounds(bounds, params, since, until)
    cols = ", ".join((*TIMELINE_COLUMNS, "actor_principal"))
    # Other principals' events in those sessions (the person's own names are their own events,
    # listed by ``who`` itself): one pass over the window rather than a lookup per session key,
    # which reads a granule per key.
    rows = _dicts(store.query(
        f"SELECT {cols} FROM {db}.events WHERE hasAny(links, {{keys:Array(String)}}) "
        f"AND NOT {where[0]} {''.join(' AND ' + b for b in bounds)} ORDER BY time, id LIMIT {{cap:UInt32}}",
        {**params, "keys": sorted(keys)}))
    if not rows:
        return []
    used = sorted({str(k) for r in rows for k in r["links"] if k in keys and not str(k).startswith("session:aws:")})
    openers = _dicts(store.query(  # the first event of each non-AWS session, wherever it lies in time
        f"SELECT key, argMin(event_id, (time, event_id)) AS id FROM {db}.event_links "
        "WHERE key IN {keys:Array(String)} GROUP BY key",
        {"keys": used})) if used else []
    first = {str(o["id"]) for o in openers} - {str(r["id"]) for r in rows} - set(issuers)
    pool = {**{str(r["id"]): r for r in rows}, **_first_events(store, first), **issuers}
    index = sessions.SessionIndex(pool.values())
    out = []
    for r in rows:
        origin = index.origin({**r, "diff": None, **issuers.get(str(r["id"]), {})})
        if origin is None or origin.origin.actor == r["actor_id"]:
            continue
        found = identities.person_of_ids(origin.origin.actor, origin.origin.principal)
        if found is not None and found.id == person.id:
            out.append([*(r[c] for c in TIMELINE_COLUMNS), origin.text(person.id)])
    return out


def _first_events(store: Store, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Rows (timeline columns and principal) of the events ``ids``."""
    if not ids:
        return {}
    cols = ", ".join((*TIMELINE_COLUMNS, "actor_principal"))
    return {str(r["id"]): r for r in _dicts(store.query(
        f"SELECT {cols} FROM {store.database}.events WHERE id IN {{ids:Array(String)}}", {"ids": sorted(ids)}))}


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _dicts(result: QueryResult) -> list[dict[str, Any]]:
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


# Lines of `why` are grouped in SQL by what makes events "the same" (ranking.group_key); an event
# that must stay alone keeps its id in the key.
_SOLO = " OR ".join(["has_diff", *(f"startsWith(type, '{p}')" for p in ranking.NEVER_GROUPED_PREFIXES)])
_GROUP_BY = "type, action, actor_id, target_kind, target_id, outcome, statement, solo"
# A group's representative is its latest event; events of one microsecond are told apart by a
# hash of the id (fixed, not storage order). One UInt128 rather than the tuple (time, id): with
# 100,000 candidates the tuple of a string costs ~40 % of the query.
_LATEST = "argMax(id, bitOr(bitShiftLeft(toUInt128(toUnixTimestamp64Micro(time)), 64), cityHash64(id)))"


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
    identities: IdentityMap | None = None,
) -> dict[str, Any]:
    """Changes to ``target`` and its related things in the ``window`` before ``at``, ranked
    (:mod:`pipeline.correlate.ranking`: by kind of change, repetitive events grouped, the failures
    that are not changes apart as symptoms), each with its chain as the worker stored it (events
    up to ``at``, at most ``chain_limit``).

    ``target`` and the topology's names match in any form :mod:`pipeline.correlate.targets`
    accepts; ``matches`` lists the distinct targets the typed name found and how. Events stored
    before the worker correlated have no chain id; their chain is the events reachable through
    shared link keys (``chain_depth`` hops). With ``identities`` every event names the ``person``
    behind its actor, through the session it was made in when it used a session's credentials."""
    topology = topology or Topology()
    names = sorted(topology.related(target))
    db = store.database
    span = {"lo": at - window, "at": at}
    groups = _dicts(store.query(
        f"SELECT type, action, actor_id, target_kind, target_id, outcome, statement, "
        f"if({_SOLO}, id, '') AS solo, any(target_name) AS target_name, any(target_service) AS target_service, "
        f"count() AS count, min(time) AS first, max(time) AS last, {_LATEST} AS last_id "
        f"FROM {db}.events WHERE time >= {{lo:DateTime64(6, 'UTC')}} AND time <= {{at:DateTime64(6, 'UTC')}} "
        f"AND hasAny(target_names, {{forms:Array(String)}}) GROUP BY {_GROUP_BY}",
        {**span, "forms": names},
    ))
    for g in groups:
        g["id"], g["time"], g["has_diff"] = g.pop("last_id"), g["last"], bool(g.pop("solo"))
    ranked = ranking.rank(groups, at=at, window_seconds=window.total_seconds(), limit=limit)
    lines = [*ranked.causes, *ranked.symptoms]
    details = {str(e["id"]): e for e in _dicts(store.query(
        f"SELECT {DETAIL_SELECT}, chain_id, chain_time FROM {db}.events WHERE id IN {{ids:Array(String)}} "
        "AND time >= {lo:DateTime64(6, 'UTC')} AND time <= {at:DateTime64(6, 'UTC')}",
        {**span, "ids": sorted({str(r.event["id"]) for r in lines})},
    ))}
    rows = [details[str(r.event["id"])] for r in ranked.causes if str(r.event["id"]) in details]
    chains = stored_chains(store, rows, at=at, limit=chain_limit)
    legacy = [c for c in rows if str(c["id"]) not in chains]
    if legacy:  # stored before the worker correlated: chains from shared link keys at query time
        events = _expand(store, legacy, at=at, depth=chain_depth, cap=chain_limit * len(legacy))
        chains.update({str(c["id"]): _component(str(c["id"]), events, chain_limit) for c in legacy})
    chains = {k: _detailed(v, identities) for k, v in chains.items()}

    indexes: dict[int, sessions.SessionIndex] = {}  # causes of one chain share its list and index

    def line(r: ranking.Ranked) -> dict[str, Any]:
        eid = str(r.event["id"])
        event = _detailed([details.get(eid, dict(r.event))], identities)[0]
        chain = chains.get(eid, [])
        index = indexes.get(id(chain))
        if index is None:
            index = indexes[id(chain)] = sessions.SessionIndex(chain)
        _through_sessions([event, *chain], index, identities)
        return {"score": r.score, "kind": r.kind, "reasons": list(r.reasons), "count": r.count,
                "first": r.first, "last": r.last, "event": event, "story": explain.story(chain or [event]),
                "chain": chain}

    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for g in groups:
        t = totals.setdefault((str(g["target_kind"]), str(g["target_id"])), {**g, "events": 0})
        t["events"] += int(g["count"])
    return {
        "target": target,
        "related": names,
        "matches": [m.as_dict() for m in targets.matches(target, totals.values())],
        "at": at,
        "window_seconds": window.total_seconds(),
        "candidates": ranked.candidates,
        "causes": [line(r) for r in ranked.causes],
        "symptoms": [line(r) for r in ranked.symptoms],
    }


def _through_sessions(
    rows: list[dict[str, Any]], index: sessions.SessionIndex, identities: IdentityMap | None
) -> None:
    """Give each row made with a session's credentials its ``session_origin`` (who opened the
    session, with the strongest assurance proven then, among the events of ``index``;
    :mod:`pipeline.identity.sessions`) and, when its own actor names nobody, the ``person``
    behind that origin. Rows already given one are left alone."""
    for row in rows:
        if "session_origin" in row:
            continue
        origin = index.origin(row)
        if origin is None or origin.origin.actor == row.get("actor_id"):
            row["session_origin"] = None
            continue
        person = (identities.person_of_ids(origin.origin.actor, origin.origin.principal)
                  if identities is not None else None)
        row["session_origin"] = origin.as_dict(person.id if person is not None else None)
        if person is not None and not row.get("person"):
            row["person"] = {**(person_summary(person) or {}), "through_session": origin.text(person.id)}


def _expand(
    store: Store, seeds: list[dict[str, Any]], *, at: datetime | None, depth: int, cap: int
) -> dict[str, dict[str, Any]]:
    """``seeds`` plus the events reachable from them through shared link keys, hop by hop
    (at most ``depth`` hops, about ``cap`` events, none later than ``at`` when given)."""
    db = store.database
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
            f"SELECT {DETAIL_SELECT} FROM {db}.events WHERE id IN (SELECT event_id FROM {db}.event_links "
            f"WHERE key IN {{keys:Array(String)}} {bound}) ORDER BY time LIMIT {{cap:UInt32}}",
            params,
        ))
        frontier = set()
        for e in found:
            if str(e["id"]) not in events:
                events[str(e["id"])] = e
                frontier.update(e["links"])
    return events


def chain(
    store: Store, event_id: str, *, depth: int = 6, limit: int = 500, identities: IdentityMap | None = None
) -> dict[str, Any]:
    """The chain of an event (DESIGN.md §3) as the worker stored it: the chain id (its earliest
    event, aliases resolved), its events in time order (at most ``limit``; ``truncated`` says if
    there were more) and its live typed edges (``from`` points to its predecessor on ``key``).

    An event stored before the worker correlated has no chain id; its chain is then computed
    from shared link keys (``depth`` hops), with edges between consecutive events of each key.
    With ``identities`` every event names the ``person`` behind its actor (or None).
    """
    db = store.database
    start = _dicts(store.query(
        f"SELECT {DETAIL_SELECT}, chain_id, chain_time FROM {db}.events WHERE id = {{id:String}} LIMIT 1",
        {"id": event_id},
    ))
    if not start:
        return {"chain_id": None, "events": [], "edges": [], "truncated": False}
    first = start[0]
    if first["chain_id"]:
        root, since = _roots(store, {first["chain_id"]: first["chain_time"]})[first["chain_id"]]
        members = _members(store, {root: since}, at=None, limit=limit + 1)[root]
        truncated = len(members) > limit
        members = _detailed(members[:limit], identities)
        _through_sessions(members, sessions.SessionIndex(members), identities)
        return {"chain_id": root, "events": members, "edges": _edges(store, [str(e["id"]) for e in members]),
                "truncated": truncated}
    members = _detailed(_component(event_id, _expand(store, start, at=None, depth=depth, cap=limit), limit),
                        identities)
    _through_sessions(members, sessions.SessionIndex(members), identities)
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
    """For each event (a row with ``id``, ``chain_id`` and ``chain_time``) that has a stored chain:
    the events of that chain, in time order, none later than ``at``, at most ``limit`` per chain."""
    own = {str(e["id"]): str(e["chain_id"]) for e in events if e.get("chain_id")}
    if not own:
        return {}
    heads = {str(e["chain_id"]): e["chain_time"] for e in events if e.get("chain_id")}
    roots = _roots(store, heads)
    members = _members(store, dict(roots.values()), at=at, limit=limit)
    return {eid: members[roots[c][0]] for eid, c in own.items()}


def chain_roots(store: Store, chains: dict[str, datetime]) -> dict[str, tuple[str, datetime]]:
    """The current id and head time of each chain (given with its head time as an event saw it)."""
    return _roots(store, chains) if chains else {}


def _roots(store: Store, chains: dict[str, datetime]) -> dict[str, tuple[str, datetime]]:
    """The current id and head time of each chain (given with its head time as the event saw it):
    one lookup in ``chain_roots``, where the writer resolved every merge (009_chain_roots.sql)."""
    return roots_table.roots(store, chains)


def _members(
    store: Store, roots: dict[str, datetime], *, at: datetime | None, limit: int
) -> dict[str, list[dict[str, Any]]]:
    """Events of each root chain (given with its head time; every chain id aliased into it
    included), in time order. No member is older than its chain's head, which bounds the scan."""
    db = store.database
    since = min(roots.values())
    if since.tzinfo is None:  # ClickHouse returns UTC columns as naive datetimes
        since = since.replace(tzinfo=UTC)
    owner = _merged_into(store, set(roots))
    params: dict[str, Any] = {"ids": sorted(owner), "since": since}
    bound = ""
    if at is not None:
        bound = "AND time <= {at:DateTime64(6, 'UTC')}"
        params["at"] = at
    found = _dicts(store.query(
        f"SELECT {DETAIL_SELECT}, chain_id FROM {db}.events "
        f"WHERE chain_id IN {{ids:Array(String)}} AND time >= {{since:DateTime64(6, 'UTC')}} {bound} "
        "ORDER BY time, id",
        params,
    ))
    out: dict[str, list[dict[str, Any]]] = {r: [] for r in roots}
    for e in found:
        bucket = out[owner[str(e.pop("chain_id"))]]
        if len(bucket) < limit:
            bucket.append(e)
    return out


def _merged_into(store: Store, roots: set[str]) -> dict[str, str]:
    """Every chain id merged (transitively) into one of ``roots``, mapped to its root: one lookup."""
    return roots_table.members_of(store, roots)


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
