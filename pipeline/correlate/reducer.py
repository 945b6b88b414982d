"""The correlation reducer of DESIGN.md §3: ``step(state, event, now) -> (state, emissions)``.

Pure: no I/O and no clock. ``now`` is injected; use an event-time watermark (for instance the
latest event time seen on the partition) rather than the wall clock, otherwise a backfill of
history older than a key type's TTL finds every such key already dead and each event starts a
chain of its own.

**In place.** For speed, :func:`step` and :func:`expire` mutate the state they are given and
return that same object. Keep a copy through :func:`~pipeline.correlate.state.encode_state` if
the previous state is needed.

What one step does, for an event ``e`` with time ``t`` and link keys ``K`` (actor and target are
never keys; duplicate keys in ``e.links`` count once):

1. *Expiry.* Any key of ``K`` whose deadline (latest event time + TTL) is before ``now`` is
   removed (:class:`Expired`) and counts as new. An amortised full sweep
   (:func:`expire`) runs when ``now`` has advanced by ``sweep_every`` and at least as many
   steps as there are live keys happened since the last sweep, so a sweep costs O(1) per event
   (a dead key may linger in memory that long, but is never joined). Whether a key had already
   been swept or is found dead here makes no difference to the chains.
2. *Idempotence.* If ``e`` (same id and time) is remembered on any live key of ``K``, the step
   is a no-op and emits nothing. Replays are recognised as long as the event is remembered: its
   keys are live and it is among the ``max_per_key`` newest of at least one of them. An event
   without links has no state; a replay re-emits the identical ``Member(e, e)``. A replay past
   that horizon is taken as a new event (new edges, possibly a new chain); replays after a
   worker crash (uncommitted offsets) are far inside it. To reprocess history, start from an
   empty state, never feed old history into a state that has already seen and forgotten it.
3. *Membership.* The chains of the live keys of ``K`` (and the chain ``e.id`` itself, if
   ``e`` was already a chain head that is still tracked) are merged: the chain whose head
   ``(time, id)`` is earliest wins, each other one gets ``Alias(loser, winner)``. If ``e`` is
   earlier than every head, ``e`` becomes the head and all of them are aliased to ``e.id``.
   Emits ``Member(e.id, chain id)``. No keys, or only new ones: ``e`` heads a new chain.
4. *Edges* (by event time, not arrival). For each key of ``K`` that already has remembered
   events, ``e`` is inserted at its ``(time, id)`` place: after the newest -> ``Edge(e -> newest)``;
   between ``p`` and ``s`` -> ``EdgeRemoved(s -> p)``, ``Edge(e -> p)``, ``Edge(s -> e)``; before
   the oldest remembered ``o`` -> ``Edge(o -> e)`` (exact if ``o`` is the key's first event;
   otherwise ``e`` "attaches to the oldest remembered one" since its real neighbours are
   forgotten, and ``o``'s edge to its forgotten predecessor stays).

Emission order within a step: ``Expired`` (sorted by key) from a sweep, ``Expired`` of dead keys of
``K`` in link order, ``Member``, ``Alias`` (losers by head ``(time, id)``), then per key of ``K`` in
link order its ``EdgeRemoved``/``Edge`` records as listed above.

Union-find compaction: ``parent`` and ``heads`` entries of chains no live key refers to are
dropped when the aliases outnumber a sixteenth of the live keys (plus 256) or aliases and heads
together twice the live keys (plus 1024): every key's chain ref is resolved to its root,
``parent`` is emptied, and ``heads`` keeps the roots in use. Cost O(live keys), at most once per
``live keys / 16 + 256`` aliases or ``live keys + 1024`` expiries, so amortised O(1). (Until
2026-12 only the second bound existed; the first keeps the union-find, whose ids are strings, a
small part of the state.) It does not change any
emission, except for a replay past the dedup horizon of an event that headed a since-merged
chain (with the entry kept, such a replay rejoins the winning chain). It is deterministic and the
encoded state is exact, so a restarted worker compacts exactly when an uninterrupted one would.
"""

from __future__ import annotations

import struct
import sys
from bisect import bisect_left
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from pipeline.correlate.emissions import Alias, Edge, EdgeRemoved, Emission, Expired, Member
from pipeline.correlate.state import (
    DEADLINE,
    GAP_LIMIT,
    NEVER,
    PACKED,
    TIME_LIMIT,
    WIDE,
    State,
    chain_ref,
    deadline_of,
    derived_deadline,
    header,
    hex16,
    pack_key,
    unpack_key,
    with_chain,
)
from pipeline.model.event import to_micros

_COMPACT_SLACK = 1024
# Aliases are compacted away once they exceed 1/16 of the live keys (plus 256): an alias costs
# about as much memory as a key's record (two ids as strings), and the O(live keys) compaction
# then runs at most once per live keys / 16 aliases (amortised: 16 record visits per alias).
_ALIAS_SHARE = 16
_SPARSE = 40
"""A bucket (dict) of live keys taking more bytes per key than this is copied by the sweep."""
_ALIAS_SLACK = 256
_head = struct.Struct("<Q16s").pack
_tail4 = struct.Struct("<I16s").pack
_tail8 = struct.Struct("<Q16s").pack
_gap4 = struct.Struct("<I").unpack_from
_gap8 = struct.Struct("<Q").unpack_from
"""A packed record's header and chain ref."""


class Correlatable(Protocol):
    """What the reducer reads of an event: :class:`~pipeline.model.Event` or any lighter struct."""

    @property
    def id(self) -> str: ...

    @property
    def time(self) -> datetime: ...

    @property
    def links(self) -> Sequence[str]: ...


def step(state: State, event: Correlatable, now: datetime | int) -> tuple[State, list[Emission]]:
    """Correlate one event (see the module docstring). ``now``: aware datetime or UTC µs.

    Mutates ``state`` in place and returns it with the emissions.
    """
    now_us = now if isinstance(now, int) else to_micros(now)
    return state, step_raw(state, event.id, to_micros(event.time), event.links, now_us)


def expire(state: State, now: datetime | int) -> tuple[State, list[Emission]]:
    """Remove every key whose latest event is more than its TTL before ``now``.

    Emits ``Expired(key)`` sorted by key. Mutates ``state`` in place and returns it.
    """
    now_us = now if isinstance(now, int) else to_micros(now)
    out: list[Emission] = []
    _sweep(state, now_us, out)
    return state, out


def step_raw(state: State, eid: str, t: int, links: Sequence[str], now_us: int) -> list[Emission]:
    """:func:`step` on already extracted fields (event id, event time in µs, link keys, now in µs)."""
    out: list[Emission] = []
    state.steps_since_sweep += 1
    if now_us >= state.next_sweep_us and state.steps_since_sweep >= state.live:
        _sweep(state, now_us, out)
        state.next_sweep_us = now_us + state.config.sweep_every_us
    if not links:
        out.append(Member(eid, eid))
        return out
    if len(links) > 1 and len(set(links)) < len(links):
        links = tuple(dict.fromkeys(links))
    # Every key of the event may change (a superset: cheaper than tracking each write).
    state.dirty_keys.update(links)
    dirty_chains = state.dirty_chains

    packed_eid = None
    if 0 <= t < TIME_LIMIT and len(eid) == 32 and (eid.islower() or eid.isdigit()):  # hex16(), inline
        try:
            packed_eid = bytes.fromhex(eid)
        except ValueError:
            pass
        else:
            if len(packed_eid) != 16:
                packed_eid = None
    if packed_eid is not None and len(links) == 1 and _append_one(state, eid, packed_eid, t, links[0], now_us, out):
        return out

    # Records: see pipeline.correlate.state. A packed record whose newest event is older than this
    # one gets it appended without being unpacked ("fast"); an out-of-order one is spliced in
    # (_locate, _insert_packed); any other record is unpacked into lists and packed again.
    buckets = state.buckets
    parent = state.parent
    heads = state.heads
    config = state.config
    ttl_us = config.ttl_us
    default_ttl = config.default_ttl_us
    # (key, key type, ttl, record, unpacked fields or None if fast, insertion index or newest time,
    # the key's bucket, the key in it)
    hits: list[tuple[str, str, int | None, bytes, Any, int, dict[str, bytes], str]] = []
    fresh: list[tuple[str | None, str, int | None]] = []  # (bucket, key in it, ttl)
    refreshed: list[tuple[dict[str, bytes], str, str, int | None]] = []
    root: str | None = None
    packed_c: bytes | None = None
    packed_root: bytes | None = None  # root's 16 bytes when read from a packed record as is
    others: set[str] | None = None
    maintenance = False

    for k in links:
        kt, colon, rest = k.partition(":")
        bucket = kt if colon else None
        ttl = ttl_us.get(kt, default_ttl)
        recs = buckets.get(bucket)
        rec = None if recs is None else recs.get(rest)
        if rec is None:
            fresh.append((bucket, rest, ttl))
            continue
        flags = rec[0]
        fields = None
        if flags & PACKED and not flags & DEADLINE:
            p = header(rec)[0] >> 8  # the newest time
            if ttl is not None and p + ttl < now_us:
                rec = None
            elif packed_eid is None:
                fields = unpack_key(rec, ttl)
            else:
                if t <= p:  # out of order (or a replay): find its place from the newest back
                    spot = _locate(rec, p, t, packed_eid)
                    if spot is None:  # already correlated: a replay
                        for rrecs, rk, rc, rttl in refreshed:
                            rrecs[rk] = with_chain(rrecs[rk], rc, rttl)
                        return out
                    if spot.pos < spot.n:
                        fields = spot  # type: ignore[assignment]
                packed_c = rec[8:24]
                c = packed_c.hex()
        else:
            fields = unpack_key(rec, ttl)
            if fields[0] < now_us:
                rec = None
        if rec is None:
            del recs[rest]  # type: ignore[union-attr]
            if not recs:  # no empty bucket: the bucket order is then the same after a restore
                del buckets[bucket]
            state.live -= 1
            out.append(Expired(k))
            maintenance = True
            fresh.append((bucket, rest, ttl))
            continue
        if fields is not None and type(fields) is not _Spot:
            times = fields[2]
            p = bisect_left(times, t)
            end = len(times)
            if p < end and times[p] == t:
                ids = fields[3]
                while p < end and times[p] == t:
                    x = ids[p]
                    if x == eid:  # already correlated: a replay
                        for rrecs, rk, rc, rttl in refreshed:
                            rrecs[rk] = with_chain(rrecs[rk], rc, rttl)
                        return out
                    if x > eid:
                        break
                    p += 1
            c = fields[1]
            packed_c = None
        hits.append((k, kt, ttl, rec, fields, p, recs, rest))  # type: ignore[arg-type]
        if c in parent:
            c = _find(parent, c, dirty_chains)
            refreshed.append((recs, rest, c, ttl))  # type: ignore[arg-type]
            packed_c = None
        if root is None:
            root = c
            packed_root = packed_c
        elif c != root:
            if others is None:
                others = {c}
            else:
                others.add(c)

    # A replay of a chain head whose keys forgot it: rejoin the chain it heads (or was merged into).
    if eid in heads or eid in parent:
        c = _find(parent, eid, dirty_chains)
        if root is None:
            root = c
        elif c != root:
            if others is None:
                others = {c}
            else:
                others.add(c)

    if root is not None and others is None and ((ht := heads[root]) < t or (ht == t and root < eid)):
        winner = root  # the usual case: joins the one chain its keys are on, which keeps its head
        out.append(Member(eid, root))
    else:
        winner = _merge(state, eid, t, root, others, out)
        if others is not None or (root is not None and winner != root):
            maintenance = True  # aliases were written

    # Edges and remembered events.
    maxk = config.max_per_key
    full = (0, 0, 0, 0, 40 + (maxk - 1) * 20, 0, 0, 0, 40 + (maxk - 1) * 24)  # by gap width: max_per_key events
    if packed_eid is None or winner is eid:
        packed_winner = packed_eid
    elif winner is root and packed_root is not None:
        packed_winner = packed_root
    else:
        packed_winner = hex16(winner)
    for k, kt, ttl, rec, fields, p, recs, rest in hits:
        if fields is None:
            # Packed, and this event is its newest: append without unpacking (p: the newest time).
            flags = rec[0]
            gap = t - p
            width = 8 if flags & WIDE else 4 if gap < GAP_LIMIT else 0
            if packed_winner is not None and width:
                out.append(Edge(k, kt, eid, rec[-16:].hex(), t))
                step = 16 + width
                size = len(rec)
                # 24 bytes of header and chain, then n ids with n - 1 gaps between them.
                drop = 0 if size < full[width] else (size - 40) // step + 2 - maxk
                if drop and drop * step >= size - 24:
                    recs[rest] = b"".join((_head((t << 8) | flags, packed_winner), packed_eid))  # type: ignore[arg-type]
                else:
                    recs[rest] = b"".join((_head((t << 8) | flags, packed_winner), rec[24 + drop * step :],
                                           (_tail8 if width == 8 else _tail4)(gap, packed_eid)))
                continue
            fields = unpack_key(rec, ttl)
            p = len(fields[2])
        elif type(fields) is _Spot:
            if packed_winner is not None:
                new = _insert_packed(rec, fields, t, eid, packed_eid, packed_winner, maxk, k, kt, out)  # type: ignore[arg-type]
                if new is not None:
                    recs[rest] = new
                    continue
            p = fields.pos
            fields = unpack_key(rec, ttl)
        recs[rest] = _insert_unpacked(fields, p, t, eid, k, kt, ttl, maxk, winner, out)
    for bucket, rest, ttl in fresh:
        recs = buckets.get(bucket)
        if recs is None:
            recs = buckets[bucket] = {}
        if packed_winner is not None:
            recs[rest] = b"".join((_head((t << 8) | PACKED, packed_winner), packed_eid))  # type: ignore[arg-type]
        else:
            recs[rest] = pack_key(winner, derived_deadline(t, ttl), [t], [eid], ttl)
    state.live += len(fresh)

    if maintenance:
        _maybe_compact(state)
    return out


def _insert_unpacked(
    fields: tuple[int, str, list[int], list[str]], p: int, t: int, eid: str, k: str, kt: str, ttl: int | None,
    maxk: int, winner: str, out: list[Emission],
) -> bytes:
    """The record of an unpacked key with event ``(t, eid)`` inserted at ``p`` (edges emitted)."""
    deadline, _, times, ids = fields
    end = len(times)
    if p == end:  # the newest event of the key
        out.append(Edge(k, kt, eid, ids[-1], t))
        times.append(t)
        ids.append(eid)
        if ttl is not None:
            deadline = t + ttl
    elif p == 0:  # older than every remembered event
        out.append(Edge(k, kt, ids[0], eid, times[0]))
        times.insert(0, t)
        ids.insert(0, eid)
    else:  # between two remembered events
        pid = ids[p - 1]
        sid = ids[p]
        st = times[p]
        out.append(EdgeRemoved(k, kt, sid, pid, st))
        out.append(Edge(k, kt, eid, pid, t))
        out.append(Edge(k, kt, sid, eid, st))
        times.insert(p, t)
        ids.insert(p, eid)
    if end >= maxk:  # end + 1 events now: keep the newest max_per_key
        drop = end + 1 - maxk
        del times[:drop]
        del ids[:drop]
    return pack_key(winner, deadline, times, ids, ttl)


def _append_one(state: State, eid: str, packed_eid: bytes, t: int, k: str, now_us: int, out: list[Emission]) -> bool:
    """The most common step, short: one live key, packed, of which the event is the newest, on a
    chain that is not aliased; the event joins it (its head is older than the key's newest event)
    and is appended. False (nothing done) in any other case."""
    kt, colon, rest = k.partition(":")
    recs = state.buckets.get(kt if colon else None)
    rec = None if recs is None else recs.get(rest)
    if rec is None:
        return False
    flags = rec[0]
    if flags != PACKED and flags != PACKED | WIDE:
        return False
    newest = header(rec)[0] >> 8
    gap = t - newest
    ttl = state.config.ttl_us.get(kt, state.config.default_ttl_us)
    if gap <= 0 or (ttl is not None and newest + ttl < now_us) or (gap >= GAP_LIMIT and flags == PACKED):
        return False
    packed_root = rec[8:24]
    root = packed_root.hex()
    parent = state.parent
    if root in parent or eid in state.heads or eid in parent:
        return False
    out.append(Member(eid, root))
    out.append(Edge(k, kt, eid, rec[-16:].hex(), t))
    wide = flags & WIDE
    step = 24 if wide else 20
    size = len(rec)
    maxk = state.config.max_per_key
    drop = 0 if size < 40 + (maxk - 1) * step else (size - 40) // step + 2 - maxk
    if drop and drop * step >= size - 24:
        recs[rest] = b"".join((_head((t << 8) | flags, packed_root), packed_eid))  # type: ignore[index]
    else:
        recs[rest] = b"".join((_head((t << 8) | flags, packed_root), rec[24 + drop * step :],  # type: ignore[index]
                               (_tail8 if wide else _tail4)(gap, packed_eid)))
    return True  # (the caller marked k dirty)


class _Spot(NamedTuple):
    """Where an out-of-order event goes in a packed record: before event ``pos`` (of ``n``),
    between ``(pred_t, pred)`` and ``(succ_t, succ)`` (``pred`` None: before the oldest)."""

    pos: int
    n: int
    pred_t: int
    pred: bytes | None
    succ_t: int
    succ: bytes


def _locate(rec: bytes, newest: int, t: int, packed_eid: bytes) -> _Spot | None:
    """The place of event ``(t, id)`` (id as 16 bytes, which order like the hex strings) in a
    packed record (no stored deadline), walking back from the newest; None if it is there."""
    wide = rec[0] & WIDE
    step = 24 if wide else 20
    gap_at = _gap8 if wide else _gap4
    n = (len(rec) - 40) // step + 1
    j = n - 1
    tj = newest
    succ_t = 0
    succ = b""
    while True:
        at = 24 + j * step
        idj = rec[at : at + 16]
        if tj < t or (tj == t and idj < packed_eid):
            return _Spot(j + 1, n, tj, idj, succ_t, succ)
        if tj == t and idj == packed_eid:
            return None
        if j == 0:
            return _Spot(0, n, 0, None, tj, idj)
        succ_t = tj
        succ = idj
        j -= 1
        tj -= gap_at(rec, at - (step - 16))[0]


def _insert_packed(
    rec: bytes, spot: _Spot, t: int, eid: str, packed_eid: bytes, packed_winner: bytes, maxk: int,
    k: str, kt: str, out: list[Emission],
) -> bytes | None:
    """The record with the out-of-order event inserted at ``spot`` (its edges emitted), or None
    (nothing emitted) if a gap does not fit the record's width."""
    wide = rec[0] & WIDE
    width = 8 if wide else 4
    limit = NEVER if wide else GAP_LIMIT
    step = 16 + width
    at = 24 + spot.pos * step  # the successor's id
    after = spot.succ_t - t
    if after >= limit:
        return None
    if spot.pred is None:  # older than every remembered event
        body = b"".join((packed_eid, after.to_bytes(width, "little"), rec[at:]))
        out.append(Edge(k, kt, spot.succ.hex(), eid, spot.succ_t))
    else:
        before = t - spot.pred_t
        if before >= limit:
            return None
        body = b"".join((rec[24 : at - width], before.to_bytes(width, "little"), packed_eid,
                         after.to_bytes(width, "little"), rec[at:]))
        pid = spot.pred.hex()
        sid = spot.succ.hex()
        out.append(EdgeRemoved(k, kt, sid, pid, spot.succ_t))
        out.append(Edge(k, kt, eid, pid, t))
        out.append(Edge(k, kt, sid, eid, spot.succ_t))
    drop = spot.n + 1 - maxk  # keep the newest max_per_key
    return b"".join((rec[:8], packed_winner, body[drop * step :] if drop > 0 else body))


def _merge(state: State, eid: str, t: int, root: str | None, others: set[str] | None, out: list[Emission]) -> str:
    """Membership: merge the chains ``root`` and ``others`` (and ``eid``'s own); the winner."""
    heads = state.heads
    parent = state.parent
    dirty_chains = state.dirty_chains
    if root is None:
        heads[eid] = t
        dirty_chains.add(eid)
        out.append(Member(eid, eid))
        return eid
    if others is None:
        ht = heads[root]
        if t < ht or (t == ht and eid < root):
            heads[eid] = t
            del heads[root]
            parent[root] = eid
            dirty_chains.add(eid)
            dirty_chains.add(root)
            out.append(Member(eid, eid))
            out.append(Alias(root, eid))
            return eid
        out.append(Member(eid, root))
        return root
    others.add(root)
    ranked = sorted([(heads[c], c) for c in others])
    ht, hc = ranked[0]
    if t < ht or (t == ht and eid < hc):
        winner = eid
        heads[eid] = t
        dirty_chains.add(eid)
        losers = ranked
    else:
        winner = hc
        losers = ranked[1:]
    out.append(Member(eid, winner))
    for _, c in losers:
        parent[c] = winner
        del heads[c]
        dirty_chains.add(c)
        out.append(Alias(c, winner))
    return winner


def _find(parent: dict[str, str], c: str, dirty: set[str]) -> str:
    """Root of chain ``c``, compressing the path behind it (the ids it rewrites go to ``dirty``)."""
    r = parent.get(c)
    if r is None:
        return c
    nxt = parent.get(r)
    if nxt is None:
        return r
    path = [c, r]
    r = nxt
    while (nxt := parent.get(r)) is not None:
        path.append(r)
        r = nxt
    for p in path:
        parent[p] = r
    dirty.update(path)
    return r


def _sweep(state: State, now_us: int, out: list[Emission]) -> None:
    config = state.config
    ttl_us = config.ttl_us
    default_ttl = config.default_ttl_us
    dead: list[tuple[str, dict[str, bytes], str]] = []  # (key, its bucket, key in it)
    for bucket, recs in state.buckets.items():
        if bucket is None:
            for rest, rec in recs.items():
                if deadline_of(rec, ttl_us.get(rest, default_ttl)) < now_us:
                    dead.append((rest, recs, rest))
            continue
        ttl = ttl_us.get(bucket, default_ttl)
        # A packed record's deadline is its newest time + the bucket's TTL (none: never dead).
        limit = -1 if ttl is None else now_us - ttl
        for rest, rec in recs.items():
            flags = rec[0]
            if flags & PACKED and not flags & DEADLINE:
                if (header(rec)[0] >> 8) < limit:
                    dead.append((f"{bucket}:{rest}", recs, rest))
            elif deadline_of(rec, ttl) < now_us:
                dead.append((f"{bucket}:{rest}", recs, rest))
    state.steps_since_sweep = 0
    if not dead:
        return
    dead.sort()
    state.dirty_keys.update(k for k, _, _ in dead)
    for k, recs, rest in dead:
        del recs[rest]
        out.append(Expired(k))
    state.live -= len(dead)
    buckets = state.buckets
    for bucket, recs in list(buckets.items()):
        if not recs:
            del buckets[bucket]
        elif sys.getsizeof(recs) > _SPARSE * len(recs) + 1024:
            # A dict never shrinks: the slots of the keys expired since it last grew stay. A copy
            # is sized for what it holds (same order, same content).
            buckets[bucket] = dict(recs)
    _maybe_compact(state)


def _maybe_compact(state: State) -> None:
    parent = state.parent
    n = state.live
    if len(parent) > n // _ALIAS_SHARE + _ALIAS_SLACK or len(parent) + len(state.heads) > 2 * n + _COMPACT_SLACK:
        compact(state)


def compact(state: State) -> None:
    """Drop union-find entries no live key needs (see the module docstring)."""
    parent = state.parent
    heads = state.heads
    dirty = state.dirty_chains
    ttl_of = state.config.ttl_of
    # Packed records hold their chain ref as 16 bytes: compare those, no string per key.
    stale = {b for b in map(hex16, parent) if b is not None}
    in_use: set[bytes] = set()
    live: dict[str, int] = {}
    for bucket, recs in state.buckets.items():
        for rest, rec in recs.items():
            flags = rec[0]
            if flags & PACKED:
                start = 16 if flags & DEADLINE else 8
                packed = rec[start : start + 16]
                if packed not in stale:
                    in_use.add(packed)
                    continue
            c = chain_ref(rec)
            if c in parent:
                c = _find(parent, c, dirty)
                k = rest if bucket is None else f"{bucket}:{rest}"
                recs[rest] = with_chain(rec, c, ttl_of(k))  # same key: no resize while iterating
                state.dirty_keys.add(k)
            if c not in live:
                live[c] = heads[c]
    for packed in in_use:
        c = packed.hex()
        if c not in live:
            live[c] = heads[c]
    dirty.update(parent)
    dirty.update(heads)
    parent.clear()
    heads.clear()
    heads.update(live)
