"""The rules reducer: ``Engine(rules).step(state, item, watermark) -> (state, alerts)`` (pure).

``item`` is one stored event as the worker emits it on ``<prefix>.chains``: the envelope (a dict),
its chain id, the person behind its actor and the chain ids merged into it. ``watermark`` is the
event-time watermark in UTC microseconds (the caller's; offline it is the latest event time
seen). Everything with a deadline (absence rules, source silence, correlation windows whose
condition is only known when they close) fires when the watermark passes the deadline, never on
a wall clock, so a backfill yields the same alerts as live traffic.

The state is plain data (:class:`State`, a msgspec struct): :func:`encode_state` /
:func:`decode_state` round-trip it, so a Faust table or a compacted changelog can hold it. The
reducer changes the state it is given (for speed) and returns it.

Two stages, for events spread over partitions (the rules runner): :meth:`Engine.route` runs per
``<prefix>.chains`` partition (chains are partition-local) and does chain predicates and
detections; for every correlation, absence and silence rule an event is relevant to, it returns
a :class:`Routed` record keyed by the rule's group (:func:`route_partition`). :meth:`Engine.receive`
runs per partition of those records: it holds them until every chains partition has passed their
event time (``TICK`` records, :func:`release_watermark`) and applies them in event-time order, so
the alerts are those of :meth:`step` over all events in time order, however the partitions'
records interleave; only events older than what every partition had already passed come late
(they are applied when they arrive).

Determinism: alert ids come from (rule, group, window start, first event), so replaying the same
events into the same state yields the same alerts with the same ids.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from pipeline.rules import logsource as ls
from pipeline.rules.fields import Doc
from pipeline.rules.loader import RuleSet
from pipeline.rules.model import Absence, Alert, Correlation, Detection, Silence, alert_id
from pipeline.rules.prefilter import Index

CHAIN_TTL_US = 30 * 86400 * 1_000_000  # chains idle this long are forgotten (deploy keys live 30 d)
_FAR = 2**62


class Item(msgspec.Struct, frozen=True, kw_only=True):
    """One event as ``<prefix>.chains`` carries it."""

    event: dict[str, Any]
    chain_id: str | None = None
    person: str | None = None
    merged: tuple[str, ...] = ()  # chain ids merged into ``chain_id`` by this event


class Entry(msgspec.Struct, array_like=True):
    """An event held in a correlation window."""

    t: int
    event_id: str
    rule: str
    value: Any = None
    chain_id: str | None = None
    person: str | None = None


class Pending(msgspec.Struct, array_like=True):
    """An ``after`` event waiting for its ``expect`` event."""

    t: int
    event_id: str
    chain_id: str | None
    person: str | None
    summary: str


class SourceStat(msgspec.Struct, array_like=True):
    """Per envelope ``source``: events seen, first and last event time."""

    count: int
    first: int
    last: int


# Kinds of routed records, in the order records of the same event are applied.
CORR, EXPECT, AFTER, SOURCE, TICK = 0, 1, 2, 3, 4


class Routed(msgspec.Struct, array_like=True):
    """What stage 1 sends stage 2 through the repartition topic (:meth:`Engine.route`).

    ``CORR``: an entry of correlation ``rule`` for group ``key`` (``by``: the rule that matched);
    ``EXPECT``/``AFTER``: a side of absence ``rule`` with join key ``key``; ``SOURCE``: ``count``
    events of source ``key`` from ``t`` to ``last``; ``TICK``: chains partition ``origin`` has
    seen events up to ``t`` (``idle``: and nothing more for now)."""

    kind: int
    rule: str
    key: str
    t: int
    event_id: str = ""
    by: str = ""
    value: Any = None
    chain_id: str | None = None
    person: str | None = None
    summary: str = ""
    depth: int = 0
    count: int = 1
    last: int = 0
    origin: int = -1
    idle: bool = False


class State(msgspec.Struct, kw_only=True):
    """Everything the rules remember between events (serialisable)."""

    watermark: int = 0
    due: int = _FAR  # earliest deadline of anything pending
    chains: dict[str, list[Any]] = {}  # chain id -> [last event time, chain patterns its events matched]
    windows: dict[str, dict[str, list[Entry]]] = {}  # correlation id -> group key -> entries
    pending: dict[str, dict[str, Pending]] = {}  # absence id -> join key -> pending
    sources: dict[str, SourceStat] = {}
    silenced: dict[str, dict[str, int]] = {}  # silence rule id -> source -> last time alerted on
    next_sweep: int = 0
    # Stage 2 only (see :meth:`Engine.receive`): chains partition -> [watermark, idle (0/1)], and
    # the routed records not yet released, in release order.
    origins: dict[int, list[int]] = {}
    held: list[Routed] = []


def encode_state(state: State) -> bytes:
    """The state as bytes (msgpack)."""
    return msgspec.msgpack.encode(state)


def decode_state(data: bytes) -> State:
    """Inverse of :func:`encode_state`."""
    return msgspec.msgpack.decode(data, type=State)


def time_us(value: Any) -> int:
    """Envelope time (RFC 3339 string or datetime) -> UTC microseconds."""
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def fmt_us(us: int) -> str:
    """UTC microseconds -> RFC 3339 with six fractional digits."""
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _summary(env: dict[str, Any]) -> str:
    actor = (env.get("actor") or {}).get("id", "?")
    target = (env.get("target") or {}).get("id", "?")
    return f"{env.get('type', '?')} {target} by {actor}"


class Engine:
    """Compiled rules plus the indexes the reducer needs; holds no event state itself."""

    def __init__(self, rules: RuleSet, *, prefilter: bool = True) -> None:
        """``prefilter=False`` runs every rule's predicate (the reference the index is tested against)."""
        self.rules = rules
        self._prefilter = prefilter
        self._index: dict[int, tuple[list[Detection], Index]] = {}
        self._by_ls: dict[tuple[str, str, str], list[Detection]] = {}
        self._env_by_ls: dict[tuple[str, str, str], list[Detection]] = {}
        self.correlations = {c.meta.id: c for c in rules.correlations}
        self._corr_of: dict[str, list[Correlation]] = {}
        for c in rules.correlations:
            for r in dict.fromkeys(c.rules):
                self._corr_of.setdefault(r, []).append(c)
        self._silence_of: dict[str, list[Silence]] = {}
        self._absences = {a.meta.id: a for a in rules.absences}
        self._patterns = sorted({p for d in rules.detections if d.chain for p in (*d.chain.missing, *d.chain.contains)})

    # ---------------------------------------------------------------- rule selection

    def detections_for(self, envelope: dict[str, Any]) -> tuple[list[Detection], list[Detection]]:
        """(native-logsource rules, ``product: causelog`` rules) that apply to this envelope."""
        product, service, category = ls.event_logsource(envelope)
        key = (product, service, category)
        native = self._by_ls.get(key)
        if native is None:
            native = [d for d in self.rules.detections
                      if not d.on_envelope and product and ls.matches(d.logsource, key)]
            self._by_ls[key] = native
        ekey = (ls.CAUSELOG, ls.source_kind(str(envelope.get("source", ""))), category)
        env = self._env_by_ls.get(ekey)
        if env is None:
            env = [d for d in self.rules.detections if d.on_envelope and ls.matches(d.logsource, ekey)]
            self._env_by_ls[ekey] = env
        return native, env

    def matching(self, envelope: dict[str, Any], chain_types: Iterable[str] | None = None) -> list[Detection]:
        """The detection rules whose selection (and chain check) this envelope satisfies;
        ``chain_types``: the chain patterns its chain matched (none known: ``missing`` holds,
        ``contains`` does not)."""
        native, env = self.detections_for(envelope)
        out: list[Detection] = []
        if native:
            raw = Doc(envelope.get("raw"))
            out.extend(d for d in self._candidates(native, raw) if d.predicate(raw) and _chain_ok(d, chain_types))
        if env:
            whole = Doc(envelope)
            out.extend(d for d in self._candidates(env, whole) if d.predicate(whole) and _chain_ok(d, chain_types))
        return out

    def _candidates(self, rules: list[Detection], doc: Doc) -> list[Detection]:
        """``rules`` (a cached per-logsource list) narrowed by the pre-filter index, order kept."""
        if not self._prefilter:
            return rules
        cached = self._index.get(id(rules))
        if cached is None or cached[0] is not rules:
            cached = (rules, Index(rules, [d.require for d in rules]))
            self._index[id(rules)] = cached
        return cached[1].candidates(doc)

    # ---------------------------------------------------------------- the reducer

    def step(self, state: State, item: Item, watermark: int) -> tuple[State, list[Alert]]:
        """Fold one event into the state; the alerts it (and the watermark it brings) completes.

        One state for every rule: what ``rules test``/``rules hunt`` use, and what :meth:`route` plus
        :meth:`receive` compute in two stages when the events are spread over partitions."""
        env = item.event
        t = time_us(env["time"])
        # Time passes up to this event first: what fell due before it fires before it counts (a
        # source's next event after a gap longer than its silence ``for`` does not hide the gap).
        _, alerts = self.advance(state, min(watermark, t - 1))
        types = self._chain_marks(state, item, t) if item.chain_id else None
        for d in self.matching(env, types):
            if d.alerts:
                alerts.append(self._detection_alert(d, item, t))
            for corr in self._corr_of.get(d.meta.id, ()):
                doc = Doc(env) if d.on_envelope else Doc(env.get("raw"))
                alerts.extend(self._add_entry(state, corr, self._corr_route(corr, d.meta.id, doc, item, t, 0), None))
        if self.rules.absences:
            for r in self._absence_routes(item, t):
                self._absence_apply(state, r)
        if self.rules.silences:
            src = self._source_route(item, t)
            if src is not None:
                self._source_seen(state, src)
        return self.advance(state, watermark, alerts)

    def route(self, state: State, item: Item, watermark: int) -> tuple[State, list[Alert], list[Routed]]:
        """Stage 1, per ``<prefix>.chains`` partition (whose events share their chains): chain marks
        and detections, whose alerts it returns, and for every correlation, absence and silence
        rule the event is relevant to, the :class:`Routed` record for stage 2 (:meth:`receive`),
        to be sent to partition :func:`route_partition` so that one group meets in one state."""
        env = item.event
        t = time_us(env["time"])
        alerts: list[Alert] = []
        routes: list[Routed] = []
        types = self._chain_marks(state, item, t) if item.chain_id else None
        for d in self.matching(env, types):
            if d.alerts:
                alerts.append(self._detection_alert(d, item, t))
            for corr in self._corr_of.get(d.meta.id, ()):
                doc = Doc(env) if d.on_envelope else Doc(env.get("raw"))
                routes.append(self._corr_route(corr, d.meta.id, doc, item, t, 0))
        if self.rules.absences:
            routes.extend(self._absence_routes(item, t))
        if self.rules.silences:
            src = self._source_route(item, t)
            if src is not None:
                routes.append(src)
        state, alerts = self.advance(state, watermark, alerts)
        return state, alerts, routes

    def coalesce(self, routes: list[Routed]) -> list[Routed]:
        """Fewer records, the same alerts: ``SOURCE`` records of one source whose event times (in
        order) are less than its shortest silence ``for`` apart become one (count, first, last),
        since no silence of that source can fire between them. Other records are kept as they are."""
        out: list[Routed] = []
        by_source: dict[str, list[Routed]] = {}
        for r in routes:
            if r.kind == SOURCE:
                by_source.setdefault(r.key, []).append(r)
            else:
                out.append(r)
        for source, rs in by_source.items():
            gap = min(rule.for_us for rule in self._silences_for(source))
            rs.sort(key=lambda r: (r.t, r.last))
            cur = msgspec.structs.replace(rs[0])
            for r in rs[1:]:
                if r.t - cur.last < gap:
                    cur.count += r.count
                    cur.last = max(cur.last, r.last)
                else:
                    out.append(cur)
                    cur = msgspec.structs.replace(r)
            out.append(cur)
        return out

    def receive(self, state: State, routed: Routed, sources: int) -> tuple[State, list[Alert], list[Routed]]:
        """Stage 2, per repartition partition: hold ``routed`` until the event-time watermark passes
        it, then apply the held records in event-time order (time, event id), so the alerts do not
        depend on how the chains partitions' records interleave (a rebalance, a restart, another
        runner's speed): see :func:`release_watermark`. Returns the alerts and the records to route
        again (an alert of a correlation used by another correlation whose group lives elsewhere)."""
        alerts: list[Alert] = []
        routes: list[Routed] = []
        if routed.kind != TICK:
            if routed.t <= state.watermark:  # late (an alert routed back, say): its time has passed
                self._apply(state, routed, alerts, routes)
            else:
                _insort_held(state.held, routed)
            return state, alerts, routes
        o = state.origins.get(routed.origin)
        if o is None:
            state.origins[routed.origin] = [routed.t, int(routed.idle)]
        else:
            o[0], o[1] = max(o[0], routed.t), int(routed.idle)
        self._release(state, sources, alerts, routes)
        return state, alerts, routes

    def _release(self, state: State, sources: int, alerts: list[Alert], routes: list[Routed]) -> None:
        w, drained = release_watermark(state, sources)
        if w <= 0:
            return
        held = state.held
        n = 0
        while n < len(held) and (drained or held[n].t < w):
            r = held[n]
            if n == 0 or held[n - 1].t != r.t:  # as :meth:`step`: time passes up to the instant first
                self.advance(state, r.t - 1, alerts, routes)
            n += 1
            self._apply(state, r, alerts, routes)
            if n == len(held) or held[n].t != r.t:
                self.advance(state, r.t, alerts, routes)
        del held[:n]
        # Records of exactly ``w`` may still come (from another chains partition at ``w``).
        self.advance(state, w if drained else w - 1, alerts, routes)

    def _apply(self, state: State, r: Routed, alerts: list[Alert], routes: list[Routed]) -> None:
        if r.kind == CORR:
            corr = self.correlations.get(r.rule)
            if corr is not None:  # else the rule was removed since
                alerts.extend(self._add_entry(state, corr, r, routes))
        elif r.kind in (EXPECT, AFTER):
            self._absence_apply(state, r)
        elif r.kind == SOURCE:
            self._source_seen(state, r)

    def advance(self, state: State, watermark: int, alerts: list[Alert] | None = None,
                routes: list[Routed] | None = None) -> tuple[State, list[Alert]]:
        """Move the watermark (also with no event) and fire what became due. ``routes`` (stage 2):
        where alerts that feed other correlations go instead of being evaluated here."""
        out = [] if alerts is None else alerts
        if watermark > state.watermark:
            state.watermark = watermark
        if state.watermark >= state.due:
            state.due = _FAR
            self._fire_absences(state, out)
            self._fire_silences(state, out)
            self._close_windows(state, out, routes)
        if state.watermark >= state.next_sweep:
            cutoff = state.watermark - CHAIN_TTL_US
            for cid in [c for c, v in state.chains.items() if v[0] < cutoff]:
                del state.chains[cid]
            state.next_sweep = state.watermark + 3600 * 1_000_000
        return state, out

    # ---------------------------------------------------------------- chains

    def _chain_marks(self, state: State, item: Item, t: int) -> list[str]:
        """The chain patterns (of any rule's ``chain:``) that some event of this event's chain,
        this one included, matched. Only chains with such an event are remembered: the state holds
        a few pattern strings per interesting chain, not the chains' contents."""
        if not self._patterns:
            return []
        cid = item.chain_id
        assert cid is not None
        rec = state.chains.get(cid)
        for old in item.merged:
            other = state.chains.pop(old, None)
            if other is not None:
                rec = rec if rec is not None else state.chains.setdefault(cid, [t, []])
                rec[1] = sorted(set(rec[1]) | set(other[1]))
                rec[0] = max(rec[0], other[0])
        typ, action = str(item.event.get("type", "")), str(item.event.get("action", ""))
        marks = [p for p in self._patterns if _pattern_hits(p, typ, action)]
        # A chain of one event without links can never grow: nothing to remember for it.
        if marks and item.event.get("links"):
            rec = rec if rec is not None else state.chains.setdefault(cid, [t, []])
            rec[1] = sorted(set(rec[1]) | set(marks))
        if rec is not None:
            rec[0] = max(rec[0], t)
            return sorted(set(rec[1]) | set(marks))
        return marks

    # ---------------------------------------------------------------- detections

    def _detection_alert(self, d: Detection, item: Item, t: int) -> Alert:
        env = item.event
        eid = str(env.get("id", ""))
        return Alert(
            id=alert_id(d.meta.id, "", t, eid), rule_id=d.meta.id, title=d.meta.title, level=d.meta.level,
            kind="detection", time=fmt_us(t), tags=d.meta.tags, event_ids=(eid,), chain_id=item.chain_id,
            person=item.person, summary=f"{d.meta.title}: {_summary(env)}",
        )

    # ---------------------------------------------------------------- correlations

    def _corr_route(self, corr: Correlation, rule_id: str, doc: Doc, item: Item, t: int, depth: int) -> Routed:
        """The entry of ``corr`` this event (matched by ``rule_id``) makes, with its group key."""
        group = {}
        for g in corr.group_by:
            name = corr.aliases.get(g, {}).get(rule_id, g)
            vals = [v for v in doc.scalars(name) if v is not None]
            if not vals and name == "person":  # the person behind the actor, else the actor itself
                vals = [item.person or (item.event.get("actor") or {}).get("id")]
            group[g] = vals[0] if vals else None
        gkey = orjson.dumps(group, option=orjson.OPT_SORT_KEYS, default=str).decode()
        value = None
        if corr.fields:
            parts = []
            for f in corr.fields:
                vals = [v for v in doc.scalars(f) if v is not None]
                parts.append(vals[0] if vals else None)
            value = None if any(p is None for p in parts) else (parts[0] if len(parts) == 1 else
                                                                  orjson.dumps(parts, default=str).decode())
        return Routed(kind=CORR, rule=corr.meta.id, key=gkey, t=t, event_id=str(item.event.get("id", "")),
                      by=rule_id, value=value, chain_id=item.chain_id, person=item.person, depth=depth)

    def _add_entry(self, state: State, corr: Correlation, r: Routed, routes: list[Routed] | None) -> list[Alert]:
        gkey, t = r.key, r.t
        entries = state.windows.setdefault(corr.meta.id, {}).setdefault(gkey, [])
        entry = Entry(t=t, event_id=r.event_id, rule=r.by, value=r.value, chain_id=r.chain_id, person=r.person)
        _insort(entries, entry)
        if corr.closing:
            state.due = min(state.due, entries[0].t + corr.timespan_us)
            return []
        window = [e for e in entries if t - corr.timespan_us <= e.t <= t]
        if not _satisfied(corr, window):
            # Entries that can no longer be in any window ending at or after the watermark go.
            horizon = max(state.watermark, t) - corr.timespan_us
            if entries and entries[0].t < horizon:
                entries[:] = [e for e in entries if e.t >= horizon]
            return []
        ids = {id(e) for e in window}
        entries[:] = [e for e in entries if id(e) not in ids]
        if not entries:
            del state.windows[corr.meta.id][gkey]
        return self._correlation_alert(state, corr, gkey, window, r.depth, routes)

    def _correlation_alert(self, state: State, corr: Correlation, gkey: str, window: list[Entry], depth: int,
                           routes: list[Routed] | None) -> list[Alert]:
        group = orjson.loads(gkey)
        first, last = window[0], window[-1]
        person = next((e.person for e in window if e.person), None)
        shown = ", ".join(f"{k}={v}" for k, v in group.items())
        alert = Alert(
            id=alert_id(corr.meta.id, gkey, first.t, first.event_id), rule_id=corr.meta.id,
            title=corr.meta.title, level=corr.meta.level, kind="correlation", time=fmt_us(last.t),
            tags=corr.meta.tags, event_ids=tuple(dict.fromkeys(e.event_id for e in window)),
            chain_id=first.chain_id, person=person, group=group, window_start=fmt_us(first.t),
            window_end=fmt_us(last.t),
            summary=f"{corr.meta.title}: {corr.type} of {len(window)} events" + (f" ({shown})" if shown else ""),
        )
        out = [alert]
        if depth < 8:  # correlations of correlations: the alert is an event with the group's fields
            item = Item(event={"id": alert.id, "time": alert.time}, chain_id=first.chain_id, person=person)
            for parent in self._corr_of.get(corr.meta.id, ()):
                r = self._corr_route(parent, corr.meta.id, Doc(group), item, last.t, depth + 1)
                if routes is None or r.key == gkey:  # the same group lives in this very state
                    out.extend(self._add_entry(state, parent, r, routes))
                else:  # stage 2: the parent's group lives in another partition
                    routes.append(r)
        return out

    def _close_windows(self, state: State, out: list[Alert], routes: list[Routed] | None) -> None:
        for cid, groups in list(state.windows.items()):
            corr = self.correlations.get(cid)
            if corr is None or not corr.closing:
                continue
            for gkey, entries in list(groups.items()):
                while entries and entries[0].t + corr.timespan_us <= state.watermark:
                    end = entries[0].t + corr.timespan_us
                    window = [e for e in entries if e.t < end]
                    entries[:] = entries[len(window):]
                    if _satisfied(corr, window):
                        out.extend(self._correlation_alert(state, corr, gkey, window, 0, routes))
                if entries:
                    state.due = min(state.due, entries[0].t + corr.timespan_us)
                else:
                    del groups[gkey]

    # ---------------------------------------------------------------- absence

    def _join_key(self, rule: Absence, item: Item, doc: Doc) -> str | None:
        if rule.join == ("chain",):
            return item.chain_id
        parts = []
        for f in rule.join:
            vals = [v for v in doc.scalars(f) if v is not None]
            if not vals:
                return None
            parts.append(vals[0])
        return orjson.dumps(parts, default=str).decode()

    def _absence_routes(self, item: Item, t: int) -> list[Routed]:
        """The sides (``EXPECT`` before ``AFTER``) of absence rules this event is, with join keys."""
        env = item.event
        product, service, category = ls.event_logsource(env)
        native = (product, service, category)
        own = (ls.CAUSELOG, ls.source_kind(str(env.get("source", ""))), category)
        out: list[Routed] = []
        for rule in self.rules.absences:
            for side, kind in ((rule.expect, EXPECT), (rule.after, AFTER)):
                key_ls = own if side.on_envelope else native
                if not side.on_envelope and not product:
                    continue
                if not ls.matches(side.logsource, key_ls):
                    continue
                doc = Doc(env) if side.on_envelope else Doc(env.get("raw"))
                if not side.predicate(doc):
                    continue
                key = self._join_key(rule, item, doc)
                if key is None:
                    continue
                out.append(Routed(kind=kind, rule=rule.meta.id, key=key, t=t, event_id=str(env.get("id", "")),
                                  chain_id=item.chain_id, person=item.person,
                                  summary=_summary(env) if kind == AFTER else ""))
        return out

    def _absence_apply(self, state: State, r: Routed) -> None:
        rule = self._absences.get(r.rule)
        if rule is None:
            return
        waiting = state.pending.setdefault(r.rule, {})
        if r.kind == EXPECT:
            p = waiting.get(r.key)
            if p is not None and p.t <= r.t <= p.t + rule.within_us:
                del waiting[r.key]
        elif r.key not in waiting:
            waiting[r.key] = Pending(t=r.t, event_id=r.event_id, chain_id=r.chain_id, person=r.person,
                                     summary=r.summary)
            state.due = min(state.due, r.t + rule.within_us)

    def _fire_absences(self, state: State, out: list[Alert]) -> None:
        for rid, waiting in state.pending.items():
            rule = self._absences.get(rid)
            if rule is None:
                continue
            for key, p in sorted(waiting.items(), key=lambda kv: (kv[1].t, kv[0])):
                deadline = p.t + rule.within_us
                if deadline < state.watermark:
                    del waiting[key]
                    out.append(Alert(
                        id=alert_id(rid, key, p.t, p.event_id), rule_id=rid, title=rule.meta.title,
                        level=rule.meta.level, kind="absence", time=fmt_us(deadline), tags=rule.meta.tags,
                        event_ids=(p.event_id,), chain_id=p.chain_id, person=p.person,
                        group={"join": key}, window_start=fmt_us(p.t), window_end=fmt_us(deadline),
                        summary=f"{rule.meta.title}: {p.summary}, nothing expected followed within "
                                f"{rule.within_us // 60_000_000} min",
                    ))
                else:
                    state.due = min(state.due, deadline)

    # ---------------------------------------------------------------- silence

    def _silences_for(self, source: str) -> list[Silence]:
        found = self._silence_of.get(source)
        if found is None:
            found = [s for s in self.rules.silences if fnmatch.fnmatchcase(source, s.source)]
            self._silence_of[source] = found
        return found

    def _source_route(self, item: Item, t: int) -> Routed | None:
        source = str(item.event.get("source", ""))
        if not self._silences_for(source):
            return None
        return Routed(kind=SOURCE, rule="", key=source, t=t, last=t)

    def _source_seen(self, state: State, r: Routed) -> None:
        rules = self._silences_for(r.key)
        if not rules:
            return
        st = state.sources.get(r.key)
        if st is None:
            st = state.sources[r.key] = SourceStat(count=r.count, first=r.t, last=max(r.t, r.last))
        else:
            st.count += r.count
            st.first = min(st.first, r.t)
            st.last = max(st.last, r.t, r.last)
        state.due = min(state.due, st.last + min(rule.for_us for rule in rules))

    def _fire_silences(self, state: State, out: list[Alert]) -> None:
        for source, st in sorted(state.sources.items()):
            for rule in self._silences_for(source):
                deadline = st.last + rule.for_us
                span = st.last - st.first
                usual = (st.count >= rule.min_events and span >= rule.baseline_us
                         and span <= (st.count - 1) * rule.for_us)
                if not usual:
                    continue
                done = state.silenced.setdefault(rule.meta.id, {})
                if done.get(source) == st.last:
                    continue
                if deadline <= state.watermark:
                    done[source] = st.last
                    out.append(Alert(
                        id=alert_id(rule.meta.id, source, st.last, ""), rule_id=rule.meta.id,
                        title=rule.meta.title, level=rule.meta.level, kind="silence", time=fmt_us(deadline),
                        tags=rule.meta.tags, group={"source": source}, window_start=fmt_us(st.last),
                        window_end=fmt_us(deadline),
                        summary=f"{rule.meta.title}: {source} sent nothing for "
                                f"{rule.for_us // 60_000_000} min (usually at least one event in that time)",
                    ))
                else:
                    state.due = min(state.due, deadline)


def _pattern_hits(pattern: str, typ: str, action: str) -> bool:
    """``type`` globs match an event's type; ``type:action`` globs its type and action."""
    if ":" in pattern:
        return fnmatch.fnmatchcase(f"{typ}:{action}", pattern)
    return fnmatch.fnmatchcase(typ, pattern)


def _chain_ok(d: Detection, marks: Iterable[str] | None) -> bool:
    if d.chain is None:
        return True
    have = set(marks or ())
    return all(p in have for p in d.chain.contains) and not any(p in have for p in d.chain.missing)


def _held_order(r: Routed) -> tuple[int, str, int, str, str]:
    return (r.t, r.event_id, r.kind, r.rule, r.key)


def _insort_held(held: list[Routed], r: Routed) -> None:
    if not held or _held_order(held[-1]) <= _held_order(r):
        held.append(r)
    else:
        bisect.insort(held, r, key=_held_order)


def release_watermark(state: State, sources: int) -> tuple[int, bool]:
    """Stage 2's event-time watermark and whether every chains partition is idle.

    All of the ``sources`` partitions idle (read to their end): the highest watermark, and
    everything held is released. Otherwise the lowest watermark of the partitions that have had
    events, idle ones included (a partition idle for now may send older events than a busy one
    next, and they must not come late), and of those busy before their first event. Until every partition has sent a tick: 0 (one not heard
    of yet may be behind)."""
    if any(p not in state.origins for p in range(sources)):
        return 0, False
    if all(idle for _, idle in state.origins.values()):
        return max((wm for wm, _ in state.origins.values()), default=0), bool(state.origins)
    # A partition idle without ever having had an event (no scope hashes to it) holds nothing back.
    return min((wm for wm, idle in state.origins.values() if wm > 0 or not idle), default=0), False


def tick(partition: int, watermark: int, idle: bool) -> Routed:
    """The record telling every stage-2 partition how far chains ``partition`` has got."""
    return Routed(kind=TICK, rule="", key="", t=watermark, origin=partition, idle=idle)


def route_key(r: Routed) -> bytes:
    """The repartition topic's record key: the group of a correlation (so that correlations of
    correlations with the same ``group-by`` stay in one state), else rule and join key or source."""
    return r.key.encode() if r.kind == CORR else f"{r.rule}\x1f{r.key}".encode()


def route_partition(r: Routed, partitions: int) -> int:
    """The repartition topic partition of ``r``: a stable hash of :func:`route_key` (not the
    client's partitioner), so every runner sends one group to the same partition."""
    return int.from_bytes(hashlib.blake2b(route_key(r), digest_size=8).digest(), "big") % partitions


_ROUTED_DECODER = msgspec.msgpack.Decoder(Routed)


def encode_routed(r: Routed) -> bytes:
    """A repartition topic record value (msgpack)."""
    return msgspec.msgpack.encode(r)


def decode_routed(data: bytes) -> Routed:
    """Inverse of :func:`encode_routed`; raises ``msgspec.ValidationError``/``DecodeError`` on bad input."""
    return _ROUTED_DECODER.decode(data)


def _insort(entries: list[Entry], entry: Entry) -> None:
    if not entries or entries[-1].t <= entry.t:
        entries.append(entry)
        return
    i = len(entries)
    while i > 0 and entries[i - 1].t > entry.t:
        i -= 1
    entries.insert(i, entry)


_OPS = {
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
}


def _metric(corr: Correlation, window: list[Entry]) -> float:
    if corr.type == "event_count":
        return float(len(window))
    if corr.type == "value_count":
        return float(len({e.value for e in window if e.value is not None}))
    if corr.type in ("value_sum", "value_avg"):
        nums = [float(e.value) for e in window if isinstance(e.value, int | float) and not isinstance(e.value, bool)]
        if corr.type == "value_sum":
            return sum(nums)
        return sum(nums) / len(nums) if nums else 0.0
    if corr.type == "temporal":
        return float(len({e.rule for e in window}))
    # temporal_ordered: how many of the rules appear in their order (greedy subsequence)
    k = 0
    for e in window:
        if k < len(corr.rules) and e.rule == corr.rules[k]:
            k += 1
    return float(k)


def _eval_expression(node: Any, present: set[str]) -> bool:
    op = node[0]
    if op == "ref":
        return node[1] in present
    if op == "not":
        return not _eval_expression(node[1], present)
    results = (_eval_expression(a, present) for a in node[1:])
    return all(results) if op == "and" else any(results)


def _satisfied(corr: Correlation, window: list[Entry]) -> bool:
    if not window:
        return False
    if corr.expression is not None:
        return _eval_expression(corr.expression, {e.rule for e in window})
    m = _metric(corr, window)
    return all(_OPS[op](m, n) for op, n in corr.conditions)


_ITEM_DECODER = msgspec.json.Decoder(Item)


def encode_item(item: Item) -> bytes:
    """The ``<prefix>.chains`` record value of one stored event (JSON)."""
    return msgspec.json.encode(item)


def decode_item(data: bytes) -> Item:
    """Inverse of :func:`encode_item`; raises ``msgspec.ValidationError``/``DecodeError`` on bad input."""
    item = _ITEM_DECODER.decode(data)
    for field in ("id", "time"):
        if field not in item.event:
            raise msgspec.ValidationError(f"the event has no `{field}` (at $.event.{field})")
    time_us(item.event["time"])  # a bad time fails here, not in the middle of a window
    return item


def chains_record(envelope: bytes, chain_id: str | None, person: str | None = None,
                  merged: Iterable[str] = ()) -> bytes:
    """The ``<prefix>.chains`` value for a stored event, splicing the envelope bytes as stored (no
    re-encoding): what the worker is to produce, keyed by scope, in the transaction of its offsets."""
    tail = msgspec.json.encode({"chain_id": chain_id, "person": person, "merged": list(merged)})
    return b'{"event":' + envelope + b"," + tail[1:]
