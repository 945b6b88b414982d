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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.model import Event
from pipeline.store.client import Store

EVENT_COLUMNS = (
    "id", "scope", "type", "source", "time", "observed_time", "subject",
    "actor_id", "actor_display", "actor_kind", "actor_principal", "actor_verified", "actor_assurance",
    "target_kind", "target_id", "target_name", "target_environment", "target_service",
    "action", "outcome", "links", "source_seq", "envelope",
    "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at",
)  # fmt: skip


@dataclass(frozen=True)
class Position:
    """Where a record came from: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Pending:
    """A decoded event waiting to be written, with its original bytes and position."""

    event: Event
    envelope: bytes
    position: Position


@dataclass(frozen=True)
class WriteResult:
    """What a write did: rows inserted and events skipped because they were already stored."""

    inserted: int
    duplicates: int


def event_row(p: Pending, ingested_at: datetime) -> list[object]:
    """The ``events`` row of a pending event, in :data:`EVENT_COLUMNS` order."""
    e = p.event
    a, t = e.actor, e.target
    return [
        e.id, e.scope, e.type, e.source, e.time, e.observed_time or ingested_at, e.subject or "",
        a.id, a.display, a.kind, a.principal, a.verified, a.assurance,
        t.kind, t.id, t.name, t.environment, t.service,
        e.action, e.outcome, list(e.links), "" if e.source_seq is None else str(e.source_seq),
        p.envelope.decode(), p.position.topic, p.position.partition, p.position.offset, ingested_at,
    ]  # fmt: skip


def batch_token(positions: Iterable[Position], ids: Iterable[str] = ()) -> str:
    """Deterministic token for a batch: the offsets it covers (per topic-partition first..last)
    and the ids it inserts. The ids keep a recreated topic, whose offsets start again, from
    colliding with an older batch inside ClickHouse's dedup window."""
    spans: dict[tuple[str, int], list[int]] = {}
    for pos in positions:
        span = spans.setdefault((pos.topic, pos.partition), [pos.offset, pos.offset])
        span[0] = min(span[0], pos.offset)
        span[1] = max(span[1], pos.offset)
    h = hashlib.sha256(";".join(f"{t}[{p}]{lo}-{hi}" for (t, p), (lo, hi) in sorted(spans.items())).encode())
    for event_id in sorted(ids):
        h.update(b"\x1f" + event_id.encode())
    return h.hexdigest()


class EventWriter:
    """Writes batches of events into ``events`` (links follow through a materialized view)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def existing_ids(self, events: Sequence[Event]) -> set[str]:
        """Ids among ``events`` that are already stored.

        The same event always has the same time, so a stored copy lies inside the batch's time
        span. When that span holds few rows (the usual case: a live stream) their ids are read
        and intersected here, which is much cheaper than sending every id as a parameter; a span
        crowded with older rows (a backfill) is searched with the ids instead.
        """
        if not events:
            return set()
        db = self.store.database
        span = {"lo": min(e.time for e in events), "hi": max(e.time for e in events)}
        where = "time >= {lo:DateTime64(6, 'UTC')} AND time <= {hi:DateTime64(6, 'UTC')}"
        in_span = int(self.store.query(f"SELECT count() FROM {db}.events WHERE {where}", span).rows[0][0])
        if in_span == 0:
            return set()
        wanted = {e.id for e in events}
        if in_span <= 4 * len(wanted):
            rows = self.store.query(f"SELECT id FROM {db}.events WHERE {where}", span).rows
            return wanted.intersection(r[0] for r in rows)
        found = self.store.query(
            f"SELECT id FROM {db}.events WHERE {where} AND id IN {{ids:Array(String)}}", {**span, "ids": list(wanted)}
        )
        return {row[0] for row in found.rows}

    def write(self, batch: Sequence[Pending], *, now: datetime | None = None) -> WriteResult:
        """Insert the events of ``batch`` not stored yet; safe to call again with the same batch."""
        if not batch:
            return WriteResult(0, 0)
        unique: dict[str, Pending] = {}
        for p in batch:
            unique.setdefault(p.event.id, p)
        stored = self.existing_ids([p.event for p in unique.values()])
        fresh = [p for i, p in unique.items() if i not in stored]
        if fresh:
            ingested = (now or datetime.now(UTC)).astimezone(UTC)
            self.store.insert(
                "events",
                [event_row(p, ingested) for p in fresh],
                EVENT_COLUMNS,
                token=batch_token((p.position for p in batch), (p.event.id for p in fresh)),
            )
        return WriteResult(len(fresh), len(batch) - len(fresh))
