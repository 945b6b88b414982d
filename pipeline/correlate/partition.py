"""Correlation of one input partition: per-scope reducer state, the event-time clock, and the
rows the store needs. Pure (no Kafka, Faust or ClickHouse); the worker's shell feeds it batches
and commits its :meth:`PartitionCorrelator.changelog` with the offsets it covers.

Why per partition: ``<prefix>.changes`` is keyed by scope, so every event of a scope arrives on
one partition in one order. Whoever owns the partition owns the state of its scopes; when the
partition moves to another worker, the state moves with it through the changelog.

Determinism is what makes restarts and rebalances safe. The emissions depend only on the state
and the sequence of records, never on how the sequence was cut into batches or on the wall
clock: ``now`` for each event is the scope's *event-time watermark*, the latest
``min(time, observed_time)`` seen so far (``observed_time`` caps a future-dated ``time`` so one
bogus clock cannot expire every key). So a worker that restarts from its changelog as of offset
``o`` and re-reads from ``o`` writes exactly the rows an uninterrupted worker wrote, and records
before ``o`` that are delivered again (offsets committed later than the changelog) are
recognised by offset and not correlated twice.

Changelog (:meth:`PartitionCorrelator.changelog`, like a Faust table's): one record per changed
link key, chain, scope and the partition itself since the previous call; folding all of them in
order (latest value per record key wins, ``None`` deletes) rebuilds the state exactly
(:meth:`PartitionCorrelator.from_changelog`). Record keys are msgpack ``[kind, scope, name]``:

- ``["k", scope, link key]`` -> ``[chain_ref, times, ids]`` (:func:`~pipeline.correlate.state.encode_key`);
- ``["c", scope, chain id]`` -> ``[head_us, parent]`` (:func:`~pipeline.correlate.state.encode_chain`);
- ``["s", scope, ""]`` -> ``[next_sweep_us, steps_since_sweep, watermark_us]``;
- ``["p", "", ""]`` -> ``[version, next_offset]``.

Only what changed is written, so a checkpoint costs what the batch touched, not the whole state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import msgspec

from pipeline.correlate.config import CorrelationConfig
from pipeline.correlate.emissions import Alias, Edge, EdgeRemoved, Member
from pipeline.correlate.reducer import Correlatable, step_raw
from pipeline.correlate.state import State, state_from_records
from pipeline.model.event import to_micros

CHANGELOG_VERSION = 1


class Scoped(Correlatable, Protocol):
    """What the partition correlator reads of an event (an Event or the worker's WireEvent)."""

    @property
    def scope(self) -> str: ...


class EdgeRow(NamedTuple):
    """One ``chain_edges`` row: ``from_event`` points to its predecessor ``to_event`` on ``key``.

    ``removed`` rows retract an earlier edge (an out-of-order event landed between the two).
    ``time_us`` is ``from_event``'s time.
    """

    scope: str
    key: str
    key_type: str
    from_event: str
    to_event: str
    time_us: int
    removed: bool


class AliasRow(NamedTuple):
    """One ``chain_aliases`` row: chain ``old_chain_id`` is now part of ``new_chain_id`` (whose
    head, its earliest event, is at ``new_head_us``), because of event ``event_id`` (at
    ``time_us``)."""

    scope: str
    old_chain_id: str
    new_chain_id: str
    new_head_us: int
    event_id: str
    time_us: int


@dataclass
class Correlated:
    """What correlating a batch produced: the chain each new event joined (by its id; the id as
    the chain was called when the event arrived, resolve through aliases) and the edge and alias
    rows, in emission order."""

    chains: dict[str, str] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)
    """Head time (µs) of every chain named in ``chains``, as of the event joining it."""
    edges: list[EdgeRow] = field(default_factory=list)
    aliases: list[AliasRow] = field(default_factory=list)
    expired: int = 0
    skipped: int = 0
    """Records below the changelog's offset: already in the state, not correlated again."""


class _ScopeRec(msgspec.Struct, array_like=True, gc=False):
    next_sweep_us: int
    steps_since_sweep: int
    watermark_us: int


class _PartitionRec(msgspec.Struct, array_like=True, gc=False):
    version: int
    next_offset: int


_enc = msgspec.msgpack.Encoder()
_name_dec = msgspec.msgpack.Decoder(tuple[str, str, str])
_scope_dec = msgspec.msgpack.Decoder(_ScopeRec)
_partition_dec = msgspec.msgpack.Decoder(_PartitionRec)

ChangelogRecord = tuple[bytes, bytes | None]
"""``(record key, value or None for a deletion)``."""


class PartitionCorrelator:
    """The correlation state of one input partition (see the module docstring).

    ``next_offset`` is the offset after the last record this state has seen (-1: none yet);
    records below it are already part of the state.
    """

    __slots__ = ("config", "dirty", "dirty_scopes", "next_offset", "partition", "states", "watermarks")

    def __init__(self, partition: int, config: CorrelationConfig | None = None) -> None:
        self.partition = partition
        self.config = config or CorrelationConfig()
        self.states: dict[str, State] = {}
        self.watermarks: dict[str, int] = {}
        self.next_offset = -1
        self.dirty = False
        self.dirty_scopes: set[str] = set()

    def __repr__(self) -> str:
        keys = sum(s.live for s in self.states.values())
        return f"<PartitionCorrelator p{self.partition} @{self.next_offset} scopes={len(self.states)} keys={keys}>"

    def seen(self, offset: int) -> bool:
        """Whether the record at ``offset`` is already part of this state."""
        return offset < self.next_offset

    def advance(self, offset: int) -> None:
        """Mark the record at ``offset`` as processed without correlating it (a rejected record)."""
        if offset >= self.next_offset:
            self.next_offset = offset + 1
            self.dirty = True

    def correlate(self, event: Scoped, offset: int, out: Correlated) -> None:
        """Correlate one event read at ``offset`` (ignored if the state has seen that offset)."""
        if offset < self.next_offset:
            out.skipped += 1
            return
        self.next_offset = offset + 1
        self.dirty = True
        scope = event.scope
        self.dirty_scopes.add(scope)
        state = self.states.get(scope)
        if state is None:
            state = self.states[scope] = State(self.config)
        t = to_micros(event.time)
        observed = getattr(event, "observed_time", None)
        seen_at = t if observed is None else min(t, to_micros(observed))
        now = self.watermarks.get(scope, seen_at)
        if seen_at > now:
            now = seen_at
        self.watermarks[scope] = now
        eid = event.id
        heads = state.heads
        for em in step_raw(state, eid, t, event.links, now):
            if type(em) is Edge:
                out.edges.append(EdgeRow(scope, em.key, em.key_type, em.from_event, em.to_event, em.time_us, False))
            elif type(em) is Member:
                chain = em.chain_id
                out.chains[em.event_id] = chain
                out.heads[chain] = heads.get(chain, t)  # an event without links heads itself, untracked
            elif type(em) is EdgeRemoved:
                out.edges.append(EdgeRow(scope, em.key, em.key_type, em.from_event, em.to_event, em.time_us, True))
            elif type(em) is Alias:
                new = em.new_chain_id
                out.aliases.append(AliasRow(scope, em.old_chain_id, new, heads[new], eid, t))
            else:
                out.expired += 1

    def changelog(self) -> list[ChangelogRecord]:
        """The records of everything that changed since the previous call (see the module
        docstring), and forget them; empty if nothing changed."""
        if not self.dirty:
            return []
        out: list[ChangelogRecord] = []
        for scope in sorted(self.dirty_scopes):
            st = self.states[scope]
            keys, chains = st.take_changes()
            out.extend((_enc.encode(("k", scope, k)), v) for k, v in keys.items())
            out.extend((_enc.encode(("c", scope, c)), v) for c, v in chains.items())
            out.append((_enc.encode(("s", scope, "")),
                        _enc.encode(_ScopeRec(st.next_sweep_us, st.steps_since_sweep, self.watermarks[scope]))))
        out.append((_enc.encode(("p", "", "")), _enc.encode(_PartitionRec(CHANGELOG_VERSION, self.next_offset))))
        self.dirty_scopes = set()
        self.dirty = False
        return out

    @classmethod
    def from_changelog(
        cls, partition: int, records: Iterable[ChangelogRecord], config: CorrelationConfig | None = None
    ) -> PartitionCorrelator:
        """Rebuild the state from every changelog record written so far, in order; ``ValueError``
        naming the record if they are corrupt."""
        latest: dict[bytes, bytes | None] = {}
        for key, value in records:
            latest[key] = value
        pc = cls(partition, config)
        keys: dict[str, dict[str, bytes]] = {}
        chains: dict[str, dict[str, bytes]] = {}
        scopes: dict[str, _ScopeRec] = {}
        try:
            for key, value in latest.items():
                if value is None:
                    continue
                kind, scope, name = _name_dec.decode(key)
                if kind == "k":
                    keys.setdefault(scope, {})[name] = value
                elif kind == "c":
                    chains.setdefault(scope, {})[name] = value
                elif kind == "s":
                    scopes[scope] = _scope_dec.decode(value)
                elif kind == "p":
                    rec = _partition_dec.decode(value)
                    if rec.version != CHANGELOG_VERSION:
                        raise ValueError(f"changelog version {rec.version}, expected {CHANGELOG_VERSION}")
                    pc.next_offset = rec.next_offset
                else:
                    raise ValueError(f"unknown changelog record kind {kind!r}")
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a correlation changelog record: {exc}") from None
        for scope in set(keys) | set(chains):
            if scope not in scopes:
                raise ValueError(f"changelog of scope {scope!r} has no scope record")
        for scope, g in scopes.items():
            try:
                pc.states[scope] = state_from_records(
                    keys.get(scope, {}), chains.get(scope, {}), g.next_sweep_us, g.steps_since_sweep, pc.config
                )
            except ValueError as exc:
                raise ValueError(f"scope {scope!r}: {exc}") from None
            pc.watermarks[scope] = g.watermark_us
        return pc


def correlate_batch(
    correlators: dict[int, PartitionCorrelator],
    records: Iterable[tuple[Scoped | None, int, int]],
    config: CorrelationConfig | None = None,
    on_error: Callable[[int, int, Exception], None] | None = None,
) -> Correlated:
    """Correlate ``(event or None, partition, offset)`` records in order; ``None`` marks a record
    that was rejected (it still counts as processed). Creates missing partition correlators.

    With ``on_error``, an exception while correlating one event is handed to it as
    ``(partition, offset, exception)``, the record counts as processed and the batch goes on
    (one bad record must not stop its partition); without, it propagates."""
    out = Correlated()
    for event, partition, offset in records:
        pc = correlators.get(partition)
        if pc is None:
            pc = correlators[partition] = PartitionCorrelator(partition, config)
        if event is None:
            pc.advance(offset)
        elif on_error is None:
            pc.correlate(event, offset, out)
        else:
            try:
                pc.correlate(event, offset, out)
            except Exception as exc:
                pc.advance(offset)
                on_error(partition, offset, exc)
    return out


def describe(pc: PartitionCorrelator) -> dict[str, Any]:
    """Sizes of a partition's state, for ``/v1/stats``."""
    return {
        "partition": pc.partition,
        "next_offset": pc.next_offset,
        "scopes": len(pc.states),
        "live_keys": sum(s.live for s in pc.states.values()),
        "chains": sum(len(s.heads) for s in pc.states.values()),
    }
