"""Batching event writer: idempotent by event id and by batch token.

Two mechanisms make a write safe to repeat:
- the batch carries a dedup token derived from the Kafka offsets it covers, so ClickHouse drops
  an identical retried insert;
- ids already stored (a replayed source, or records re-read after a crash between the insert and
  the offset commit) are filtered out before inserting, so no event is stored twice even when the
  retried batch is cut differently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pipeline.correlate.partition import AliasRow, EdgeRow
from pipeline.integrity.log import NO_INDEX, PartitionLog, assign
from pipeline.integrity.merkle import leaf_hash
from pipeline.model import Event, to_micros
from pipeline.store import chain_roots
from pipeline.store.client import Store

EVENT_COLUMNS = (
    "id", "scope", "type", "source", "time", "observed_time", "subject",
    "actor_id", "actor_display", "actor_kind", "actor_principal", "actor_verified", "actor_assurance",
    "target_kind", "target_id", "target_name", "target_environment", "target_service",
    "action", "outcome", "links", "source_seq", "chain_id", "chain_time", "envelope",
    "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at", "log_index", "leaf_hash",
)  # fmt: skip


# The types the ``events`` columns are sent as. ``LowCardinality(String)`` columns go as plain
# ``String`` (ClickHouse converts on insert): clickhouse-connect builds the dictionary of a
# low-cardinality column in Python, which cost ~2 us an event of the worker's GIL-bound time.
_TIME = "DateTime64(6, 'UTC')"
EVENT_SEND_TYPES = (
    "String", "String", "String", "String", _TIME, _TIME, "String",
    "String", "String", "String", "String", "Bool", "String",
    "String", "String", "String", "String", "String",
    "String", "String", "Array(String)", "String", "String", _TIME, "String",
    "String", "UInt32", "UInt64", _TIME, "Int64", "FixedString(32)",
)  # fmt: skip


class Position(NamedTuple):
    """Where a record came from: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Pending(NamedTuple):
    """A decoded event waiting to be written, with its original bytes and position.

    ``event`` is an :class:`Event` or the worker's lighter ``WireEvent`` view of one (same
    attributes, ``raw``/``diff`` left as JSON).
    """

    event: Event
    envelope: bytes
    position: Position


@dataclass(frozen=True)
class WriteResult:
    """What a write did: rows inserted and events skipped because they were already stored;
    ``logs``: the integrity logs of the partitions written, to install now that they are stored;
    ``kept``: the records whose event the store holds *from that very record* (inserted now, or
    by an earlier attempt at the same position before a crash), in batch order -- what the
    worker emits to ``<prefix>.chains`` (a duplicate of an event stored from elsewhere is not);
    ``chains``: those records, per input partition, once the worker's batch handler made them."""

    inserted: int
    duplicates: int
    logs: dict[int, PartitionLog] = field(default_factory=dict, compare=False)
    kept: tuple[Pending, ...] = field(default=(), compare=False)
    chains: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict, compare=False)


EDGE_COLUMNS = ("scope", "key", "key_type", "from_event", "to_event", "time", "removed")
ALIAS_COLUMNS = ("scope", "old_chain_id", "new_chain_id", "new_head_time", "event_id", "time")


def event_row(p: Pending, ingested_at: datetime) -> list[object]:
    """The ``events`` row of a pending event (no chain), in :data:`EVENT_COLUMNS` order."""
    return [col[0] for col in event_columns([p], ingested_at)]


def event_columns(
    batch: Sequence[Pending],
    ingested_at: datetime,
    chains: Mapping[str, str] | None = None,
    heads: Mapping[str, int] | None = None,
    logged: Sequence[tuple[int, bytes]] | None = None,
) -> list[list[Any]]:
    """The ``events`` columns of a batch, in :data:`EVENT_COLUMNS` order. ``chains`` gives the
    chain id of each event by event id (missing: empty), ``heads`` each chain's head time (µs),
    ``logged`` each event's ``(log index, leaf hash)`` (missing: in no log).

    Built column by column (the insert is column-oriented, so nothing is transposed) with times
    as UTC microseconds, which DateTime64(6) takes as they are, and the envelope as the bytes
    received.
    """
    ev = [p.event for p in batch]
    actors = [e.actor for e in ev]
    targets = [e.target for e in ev]
    ingested = to_micros(ingested_at)
    chain_ids = [chains.get(e.id, "") for e in ev] if chains else [""] * len(ev)
    head = heads or {}
    return [
        [e.id for e in ev],
        [e.scope for e in ev],
        [e.type for e in ev],
        [e.source for e in ev],
        [to_micros(e.time) for e in ev],
        [ingested if e.observed_time is None else to_micros(e.observed_time) for e in ev],
        [e.subject or "" for e in ev],
        [a.id for a in actors],
        [a.display for a in actors],
        [a.kind for a in actors],
        [a.principal for a in actors],
        [a.verified for a in actors],
        [a.assurance for a in actors],
        [t.kind for t in targets],
        [t.id for t in targets],
        [t.name for t in targets],
        [t.environment for t in targets],
        [t.service for t in targets],
        [e.action for e in ev],
        [e.outcome for e in ev],
        [list(e.links) for e in ev],
        ["" if e.source_seq is None else str(e.source_seq) for e in ev],
        chain_ids,
        [head.get(c, 0) for c in chain_ids],
        [p.envelope for p in batch],
        [p.position.topic for p in batch],
        [p.position.partition for p in batch],
        [p.position.offset for p in batch],
        [ingested] * len(batch),
        [i for i, _ in logged] if logged is not None else [NO_INDEX] * len(batch),
        [h for _, h in logged] if logged is not None else [b""] * len(batch),
    ]


def batch_token(positions: Iterable[Position], ids: Iterable[str] = ()) -> str:
    """Deterministic token for a batch: the offsets it covers (per topic-partition first..last)
    and the ids it inserts. The ids keep a recreated topic, whose offsets start again, from
    colliding with an older batch inside ClickHouse's dedup window."""
    offsets: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in positions:
        key = (topic, partition)
        got = offsets.get(key)
        if got is None:
            offsets[key] = [offset]
        else:
            got.append(offset)
    h = hashlib.sha256(";".join(f"{t}[{p}]{min(o)}-{max(o)}" for (t, p), o in sorted(offsets.items())).encode())
    h.update("\x1f".join(sorted(ids)).encode())
    return h.hexdigest()


class EventWriter:
    """Writes batches of events into ``events`` (links follow through a materialized view)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def existing_ids(self, events: Sequence[Event]) -> set[str]:
        """Ids among ``events`` that are already stored (see :meth:`existing`)."""
        return set(self.existing(events))

    def existing(self, events: Sequence[Event]) -> dict[str, Position]:
        """Ids among ``events`` that are already stored, with the position they were stored from.

        The same event always has the same time, so a stored copy lies inside the batch's time
        span. When that span holds few rows (the usual case: a live stream) their ids are read
        and intersected here, which is much cheaper than sending every id as a parameter; a span
        crowded with older rows (a backfill) is searched with the ids instead.
        """
        if not events:
            return {}
        db = self.store.database
        span = {"lo": min(e.time for e in events), "hi": max(e.time for e in events)}
        where = "time >= {lo:DateTime64(6, 'UTC')} AND time <= {hi:DateTime64(6, 'UTC')}"
        in_span = int(self.store.query(f"SELECT count() FROM {db}.events WHERE {where}", span).rows[0][0])
        if in_span == 0:
            return {}
        wanted = {e.id for e in events}
        cols = "id, kafka_topic, kafka_partition, kafka_offset"
        if in_span <= 4 * len(wanted):
            rows = self.store.query(f"SELECT {cols} FROM {db}.events WHERE {where}", span).rows
        else:
            rows = self.store.query(f"SELECT {cols} FROM {db}.events WHERE {where} AND id IN {{ids:Array(String)}}",
                                    {**span, "ids": list(wanted)}).rows
        return {r[0]: Position(r[1], int(r[2]), int(r[3])) for r in rows if r[0] in wanted}

    def write(
        self,
        batch: Sequence[Pending],
        *,
        now: datetime | None = None,
        chains: Mapping[str, str] | None = None,
        heads: Mapping[str, int] | None = None,
        edges: Sequence[EdgeRow] = (),
        aliases: Sequence[AliasRow] = (),
        logs: dict[int, PartitionLog] | None = None,
    ) -> WriteResult:
        """Insert the events of ``batch`` not stored yet, with their chain ids (``chains``, by
        event id; ``heads``: each chain's head time), and the chain ``edges`` and ``aliases`` the
        batch produced; safe to call again with the same batch.

        Chain rows go first, so an event whose chain id is visible has its aliases visible too.
        They are not deduplicated here: a repeated write adds identical rows, which readers
        collapse (the event rows themselves are never repeated).

        With ``logs`` (the integrity logs by partition) every event that is stored gets the next
        index of its partition's log, in batch order, and its leaf hash. "Stored" is decided by
        the store, the same way on every replay: an id already stored from another position is
        a duplicate (no index); one stored from this very position is this record written
        before a crash and keeps its place in the log. ``logs`` is not changed: the result
        carries the new logs.
        """
        if edges or aliases:
            token = batch_token(p.position for p in batch)
            if edges:
                self.store.insert("chain_edges", edge_columns(edges), EDGE_COLUMNS, column_oriented=True,
                                  token=token + ":edges")
            if aliases:
                self.store.insert("chain_aliases", alias_columns(aliases), ALIAS_COLUMNS, column_oriented=True,
                                  token=token + ":aliases")
                chain_roots.record(self.store, aliases, token=token)  # readers resolve a chain in one lookup
        if not batch:
            return WriteResult(0, 0)
        unique: dict[str, Pending] = {}
        for p in batch:
            unique.setdefault(p.event.id, p)
        stored = self.existing([p.event for p in unique.values()])
        fresh = [p for i, p in unique.items() if i not in stored]
        logged: list[tuple[int, bytes]] | None = None
        new_logs: dict[int, PartitionLog] = {}
        if logs is not None:
            logged, new_logs = _log_batch(batch, unique, stored, fresh, logs)
        if fresh:
            ingested = (now or datetime.now(UTC)).astimezone(UTC)
            self.store.insert(
                "events",
                event_columns(fresh, ingested, chains, heads, logged),
                EVENT_COLUMNS,
                column_oriented=True,
                column_types=EVENT_SEND_TYPES,
                token=batch_token((p.position for p in batch), (p.event.id for p in fresh)),
            )
        kept = tuple(p for p in batch if (stored[p.event.id] == p.position if p.event.id in stored
                                          else unique[p.event.id] is p))
        return WriteResult(len(fresh), len(batch) - len(fresh), new_logs, kept)


def _log_batch(
    batch: Sequence[Pending],
    unique: Mapping[str, Pending],
    stored: Mapping[str, Position],
    fresh: Sequence[Pending],
    logs: dict[int, PartitionLog],
) -> tuple[list[tuple[int, bytes]], dict[int, PartitionLog]]:
    """``(log index, leaf hash)`` of each ``fresh`` event, and the logs after the batch."""
    entries: list[tuple[int, int, bytes | None]] = []
    # One pass: fresh is the batch's first copy of each id not stored, in batch order.
    is_fresh: list[bool] = []
    for p in batch:
        at = stored.get(p.event.id)
        first = unique[p.event.id] is p
        keep = at == p.position if at is not None else first
        entries.append((p.position.partition, p.position.offset, leaf_hash(p.envelope) if keep else None))
        is_fresh.append(at is None and first)
    indexes, new_logs = assign(logs, entries)
    out = [(i, e[2] or b"") for e, i, f in zip(entries, indexes, is_fresh, strict=True) if f]
    if len(out) != len(fresh):  # a broken invariant must not silently misalign indexes and rows
        raise AssertionError(f"integrity log: {len(out)} indexes for {len(fresh)} fresh events")
    return out, new_logs


def edge_columns(edges: Sequence[EdgeRow]) -> list[list[Any]]:
    """``chain_edges`` columns, in :data:`EDGE_COLUMNS` order (the rows are tuples in that order)."""
    return [list(col) for col in zip(*edges, strict=True)]


def alias_columns(aliases: Sequence[AliasRow]) -> list[list[Any]]:
    """``chain_aliases`` columns, in :data:`ALIAS_COLUMNS` order (the rows are tuples in that order)."""
    return [list(col) for col in zip(*aliases, strict=True)]
