"""Correlation of one input partition: per-scope reducer state, the event-time clock, and the
rows the store needs. Pure (no Kafka, Faust or ClickHouse); the worker's shell feeds it batches
and persists its :meth:`PartitionCorrelator.snapshot` before committing offsets.

Why per partition: ``<prefix>.changes`` is keyed by scope, so every event of a scope arrives on
one partition in one order. Whoever owns the partition owns the state of its scopes; when the
partition moves to another worker, the state moves with it through the snapshot.

Determinism is what makes restarts and rebalances safe. The emissions depend only on the state
and the sequence of records, never on how the sequence was cut into batches or on the wall
clock: ``now`` for each event is the scope's *event-time watermark*, the latest
``min(time, observed_time)`` seen so far (``observed_time`` caps a future-dated ``time`` so one
bogus clock cannot expire every key). So a worker that restarts from a snapshot taken at offset
``o`` and re-reads from ``o`` writes exactly the rows an uninterrupted worker wrote, and records
before ``o`` that are delivered again (offsets committed later than the snapshot) are recognised
by offset and not correlated twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from pipeline.correlate.config import CorrelationConfig
from pipeline.correlate.emissions import Alias, Edge, EdgeRemoved, Member
from pipeline.correlate.reducer import Correlatable, step_raw
from pipeline.correlate.state import State, decode_state, encode_state
from pipeline.model.event import to_micros

SNAPSHOT_VERSION = 1


class Scoped(Correlatable, Protocol):
    """What the partition correlator reads of an event (an Event or the worker's WireEvent)."""

    @property
    def scope(self) -> str: ...


@dataclass(frozen=True)
class EdgeRow:
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


@dataclass(frozen=True)
class AliasRow:
    """One ``chain_aliases`` row: chain ``old_chain_id`` is now part of ``new_chain_id``,
    because of event ``event_id`` (at ``time_us``)."""

    scope: str
    old_chain_id: str
    new_chain_id: str
    event_id: str
    time_us: int


@dataclass
class Correlated:
    """What correlating a batch produced: the chain each new event joined (by its id; the id as
    the chain was called when the event arrived, resolve through aliases) and the edge and alias
    rows, in emission order."""

    chains: dict[str, str] = field(default_factory=dict)
    edges: list[EdgeRow] = field(default_factory=list)
    aliases: list[AliasRow] = field(default_factory=list)
    expired: int = 0
    skipped: int = 0
    """Records below the snapshot offset: already in the state, not correlated again."""


class _Wire(msgspec.Struct, array_like=True):
    version: int
    partition: int
    next_offset: int
    watermarks: dict[str, int]
    scopes: dict[str, bytes]


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Wire)


class PartitionCorrelator:
    """The correlation state of one input partition (see the module docstring).

    ``next_offset`` is the offset after the last record this state has seen (-1: none yet);
    records below it are already part of the state.
    """

    __slots__ = ("config", "dirty", "next_offset", "partition", "states", "watermarks")

    def __init__(self, partition: int, config: CorrelationConfig | None = None) -> None:
        self.partition = partition
        self.config = config or CorrelationConfig()
        self.states: dict[str, State] = {}
        self.watermarks: dict[str, int] = {}
        self.next_offset = -1
        self.dirty = False

    def __repr__(self) -> str:
        keys = sum(len(s.keys) for s in self.states.values())
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
        for em in step_raw(state, eid, t, event.links, now):
            if type(em) is Edge:
                out.edges.append(EdgeRow(scope, em.key, em.key_type, em.from_event, em.to_event, em.time_us, False))
            elif type(em) is Member:
                out.chains[em.event_id] = em.chain_id
            elif type(em) is EdgeRemoved:
                out.edges.append(EdgeRow(scope, em.key, em.key_type, em.from_event, em.to_event, em.time_us, True))
            elif type(em) is Alias:
                out.aliases.append(AliasRow(scope, em.old_chain_id, em.new_chain_id, eid, t))
            else:
                out.expired += 1

    def snapshot(self) -> bytes:
        """The whole state, exactly (msgpack); :meth:`restore` rebuilds it."""
        wire = _Wire(
            SNAPSHOT_VERSION,
            self.partition,
            self.next_offset,
            self.watermarks,
            {scope: encode_state(s) for scope, s in self.states.items()},
        )
        return _enc.encode(wire)

    @classmethod
    def restore(cls, data: bytes, config: CorrelationConfig | None = None) -> PartitionCorrelator:
        """Inverse of :meth:`snapshot`; ``ValueError`` naming what is wrong if ``data`` is corrupt."""
        try:
            wire = _dec.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a correlation snapshot: {exc}") from None
        if wire.version != SNAPSHOT_VERSION:
            raise ValueError(f"correlation snapshot version {wire.version}, expected {SNAPSHOT_VERSION}")
        pc = cls(wire.partition, config)
        pc.next_offset = wire.next_offset
        pc.watermarks = dict(wire.watermarks)
        for scope, blob in wire.scopes.items():
            try:
                pc.states[scope] = decode_state(blob, pc.config)
            except ValueError as exc:
                raise ValueError(f"scope {scope!r}: {exc}") from None
        return pc


def correlate_batch(
    correlators: dict[int, PartitionCorrelator],
    records: Iterable[tuple[Scoped | None, int, int]],
    config: CorrelationConfig | None = None,
) -> Correlated:
    """Correlate ``(event or None, partition, offset)`` records in order; ``None`` marks a record
    that was rejected (it still counts as processed). Creates missing partition correlators."""
    out = Correlated()
    for event, partition, offset in records:
        pc = correlators.get(partition)
        if pc is None:
            pc = correlators[partition] = PartitionCorrelator(partition, config)
        if event is None:
            pc.advance(offset)
        else:
            pc.correlate(event, offset, out)
    return out


def chunk(data: bytes, size: int) -> Sequence[bytes]:
    """``data`` cut into pieces of at most ``size`` bytes (at least one piece)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def describe(pc: PartitionCorrelator) -> dict[str, Any]:
    """Sizes of a partition's state, for ``/v1/stats``."""
    return {
        "partition": pc.partition,
        "next_offset": pc.next_offset,
        "scopes": len(pc.states),
        "live_keys": sum(len(s.keys) for s in pc.states.values()),
        "chains": sum(len(s.heads) for s in pc.states.values()),
    }
