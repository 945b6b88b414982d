"""Running a source: raw records in, envelopes to Kafka, cursor advanced atomically.

A source is ``fetch`` (I/O: yields :class:`RawRecord` from a saved cursor) plus ``convert``
(pure: one raw record to envelopes). :func:`run_source` drives them through a :class:`Sink`:
events of a chunk of records and the cursor after that chunk are committed together (a Kafka
transaction in :mod:`pipeline.bus.sink`), so a source killed at any point and restarted resumes
exactly after the last committed chunk: nothing missing, nothing twice. A record that cannot be
converted goes to the DLQ with the reason and the source goes on; nothing stops it.

This module imports no Kafka client: the sink is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from pipeline.errors import DecodeError
from pipeline.model import Event, encode, with_observed_time


@dataclass(frozen=True)
class RawRecord:
    """One record as the source read it.

    ``cursor`` is where to resume *after* this record (JSON-able); ``origin`` names it for
    humans and DLQ keys (``path:line``, ``delivery:<id>``); ``original`` is its verbatim bytes.
    """

    payload: Any
    cursor: Any
    origin: str
    original: bytes


class Sink(Protocol):
    """Where a source's output goes; :class:`pipeline.bus.sink.KafkaSink` is the real one."""

    def send(self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue one record in the current unit of work."""

    def commit(self, cursor: bytes) -> None:
        """Make the queued records and the cursor durable together (all or nothing)."""

    def last_cursor(self) -> bytes | None:
        """The cursor of the last committed unit, or None on a first run."""


@dataclass
class Report:
    """What a run did, for the CLI's summary line."""

    records: int = 0
    events: int = 0
    rejected: int = 0
    commits: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def load_cursor(sink: Sink) -> Any:
    """The decoded cursor to resume from (None on a first run)."""
    raw = sink.last_cursor()
    return None if raw is None else orjson.loads(raw)


def run_source(
    name: str,
    records: Iterable[RawRecord],
    convert: Callable[[RawRecord], list[Event]],
    sink: Sink,
    *,
    topic: str,
    dlq: str,
    chunk_records: int = 500,
    chunk_seconds: float = 1.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_progress: Callable[[Report, RawRecord], None] | None = None,
    sign: Callable[[Event], Event] | None = None,
) -> Report:
    """Convert and send every record; commit every ``chunk_records`` records or ``chunk_seconds``.
    ``sign``: the connector signature step (``CAUSELOG_SOURCE_SIGNING_KEY``), applied last."""
    report = Report()
    pending: RawRecord | None = None
    started = time.monotonic()
    for rec in records:
        report.records += 1
        try:
            events = convert(rec)
        except DecodeError as exc:
            report.rejected += 1
            report.reasons[exc.reason] = report.reasons.get(exc.reason, 0) + 1
            origin = f"{name}:{rec.origin}"
            sink.send(dlq, rec.original, origin.encode(), exc.dlq_headers(origin, source=name))
        else:
            now = clock()
            for event in events:
                stamped = with_observed_time(event, now)
                sink.send(topic, encode(sign(stamped) if sign else stamped), event.scope.encode())
            report.events += len(events)
        pending = rec
        if on_progress is not None:
            on_progress(report, rec)
        if report.records % chunk_records == 0 or time.monotonic() - started >= chunk_seconds:
            sink.commit(orjson.dumps(rec.cursor))
            report.commits += 1
            pending = None
            started = time.monotonic()
    if pending is not None:
        sink.commit(orjson.dumps(pending.cursor))
        report.commits += 1
    return report
