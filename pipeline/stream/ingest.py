"""The worker's batch step: decode, reject to the DLQ, write the rest. No Faust in here.

Order matters for "nothing lost": rejected records are acknowledged by Kafka on the DLQ and
valid ones are stored in ClickHouse before the batch returns; only then may the caller
acknowledge the offsets. The DLQ is keyed by the origin ``topic[partition]@offset``, so a
record re-sent after a crash carries the same key and readers (and compaction) collapse it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import msgspec

from pipeline.correlate.partition import Correlated
from pipeline.errors import DecodeError, StoreError
from pipeline.identity import Join, learn
from pipeline.integrity.note import Verifier
from pipeline.integrity.sourcesig import check_envelope
from pipeline.metrics import note_newest
from pipeline.model import Event
from pipeline.model.codec import decode_json, decode_wire
from pipeline.rules.engine import chains_record
from pipeline.store.identities import write_joins
from pipeline.store.writer import EventWriter, Pending, Position, WriteResult
from pipeline.stream.correlation import Correlation
from pipeline.stream.people import People

log = logging.getLogger("causelog.worker")


class Record(NamedTuple):
    """One Kafka record as the worker received it."""

    value: bytes | None
    position: Position


@dataclass(frozen=True)
class Rejection:
    """A record the worker refused, with why."""

    record: Record
    error: DecodeError

    def headers(self) -> list[tuple[str, bytes]]:
        """DLQ headers: the reason code, the sentence, the field and the origin."""
        pos = self.record.position
        return self.error.dlq_headers(
            str(pos), origin_topic=pos.topic, origin_partition=pos.partition, origin_offset=pos.offset
        )


@dataclass
class Counters:
    """Running totals of one worker, for ``/v1/stats`` and ``causelog status``."""

    records: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    store_retries: int = 0
    last_batch_at: float = 0.0
    # Set while store writes fail (cleared by the next successful write): for /health.
    store_failing_since: float = 0.0
    store_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # For /metrics (pipeline.stream.metrics): rejections by reason, newest event time per source,
    # and an observer of (records, seconds) per batch.
    rejected_by: dict[str, int] = field(default_factory=dict, repr=False)
    newest: dict[str, datetime] = field(default_factory=dict, repr=False)
    observe: Callable[[int, float], None] | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, float | str]:
        """The running totals and the store's failure state (numbers and strings), JSON-ready."""
        with self.lock:
            return {k: v for k, v in vars(self).items() if isinstance(v, int | float | str)}

    def note(self, prepared: Prepared) -> None:
        """Metrics of a finished batch (call with the lock held)."""
        for r in prepared.bad:
            self.rejected_by[r.error.reason] = self.rejected_by.get(r.error.reason, 0) + 1
        note_newest(self.newest, (p.event for p in prepared.good))
        if self.observe is not None:
            self.observe(prepared.records, time.monotonic() - prepared.started)


# Sources whose records prove identity joins (pipeline.identity.learn): only their events are
# decoded in full (the worker otherwise keeps ``raw`` unparsed).
_JOIN_SOURCES = ("github", "okta", "cloudtrail")


def internal_error(exc: BaseException) -> DecodeError:
    """The DLQ error of a record whose handling raised something unexpected (a bug, not bad
    input): reason ``internal_error`` with the exception's type and text."""
    return DecodeError("internal_error", f"{type(exc).__name__}: {exc}"[:2000])


def learn_joins(good: Sequence[Pending]) -> list[Join]:
    """Identity joins proven by a batch's events (GitHub, Okta and CloudTrail records, and
    git actors with a GitHub no-reply address)."""
    return learn_each(good)[0]


def learn_each(good: Sequence[Pending]) -> tuple[list[Join], dict[Position, DecodeError]]:
    """:func:`learn_joins`, one record at a time: also the records it failed on, with why."""
    found: set[Join] = set()
    failed: dict[Position, DecodeError] = {}
    for p in good:
        e = p.event
        try:
            if e.source.partition("://")[0] in _JOIN_SOURCES:
                found.update(learn(with_raw(e)))
            elif "noreply.github.com" in e.actor.id or "noreply.github.com" in e.actor.principal:
                found.update(learn(e))
        except DecodeError as exc:
            failed[p.position] = exc
        except Exception as exc:  # one record must never stop the partition
            failed[p.position] = internal_error(exc)
    return sorted(found), failed


def with_raw(event: Event | Any) -> Event:
    """``event`` with its ``raw`` payload parsed, for :func:`pipeline.identity.learn`: the worker's
    ``WireEvent`` (validated by ``decode_wire``) gets only its ``raw`` parsed, where a full
    ``decode`` of the envelope cost as much as validating it again; an ``Event`` is returned as
    it is."""
    raw = getattr(event, "raw", None)
    if isinstance(raw, msgspec.Raw):
        return cast(Event, msgspec.structs.replace(event, raw=decode_json(raw)))
    return cast(Event, event)


def split(
    records: Sequence[Record], max_bytes: int, source_keys: Mapping[str, Verifier] | None = None
) -> tuple[list[Pending], list[Rejection]]:
    """Decode every record: valid ones to write, the others with their error. With
    ``source_keys``, events of a source that must sign need a valid connector signature. An
    unexpected exception while decoding one record rejects that record (``internal_error``)."""
    good: list[Pending] = []
    bad: list[Rejection] = []
    for rec in records:
        if rec.value is None:
            bad.append(Rejection(rec, DecodeError("bad_json", "record has no value (tombstone)")))
            continue
        try:
            event = decode_wire(rec.value, max_bytes=max_bytes)
            if source_keys:
                check_envelope(rec.value, event.source, source_keys)
            good.append(Pending(event, rec.value, rec.position))
        except DecodeError as exc:
            bad.append(Rejection(rec, exc))
        except Exception as exc:  # RecursionError, MemoryError on one huge record, a bug...
            log.exception("decoding %s raised", rec.position)
            bad.append(Rejection(rec, internal_error(exc)))
    return good, bad


@dataclass(frozen=True)
class Prepared:
    """A decoded batch between the two stages of :class:`BatchHandler`."""

    records: int
    good: list[Pending]
    bad: list[Rejection]
    correlated: Correlated | None = None
    joins: list[Join] | None = None
    started: float = 0.0  # time.monotonic() when the batch was taken in hand


class BatchHandler:
    """Processes one batch to completion; blocking, meant to run on a worker thread.

    ``send_dlq`` must return only when Kafka acknowledged every rejection. Store failures are
    retried with backoff for as long as it takes (backpressure: the consumer stops pulling),
    never skipped. With a ``correlation``, :meth:`prepare` also correlates the batch (so batches
    must be prepared in the order they were consumed) and :meth:`finish` stores the chains.
    """

    def __init__(
        self,
        writer: EventWriter,
        send_dlq: Callable[[Sequence[Rejection]], None],
        *,
        max_bytes: int,
        counters: Counters | None = None,
        max_backoff: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        correlation: Correlation | None = None,
        integrity: bool = True,
        source_keys: Mapping[str, Verifier] | None = None,
        people: People | None = None,
        fail_store_until: float = 0.0,
    ) -> None:
        self.source_keys = source_keys
        self.people = people or People()
        self.correlation = correlation
        # Logs live with the correlation state (same changelog, same transaction).
        self.integrity = integrity and correlation is not None
        # Test only (CAUSELOG_FAULT_STORE_FAIL_UNTIL): store writes fail until this Unix time.
        self.fail_store_until = fail_store_until
        self.writer = writer
        self.send_dlq = send_dlq
        self.max_bytes = max_bytes
        self.counters = counters or Counters()
        self.max_backoff = max_backoff
        self.clock = clock

    def __call__(self, records: Sequence[Record]) -> WriteResult:
        return self.finish(self.prepare(records))

    def prepare(self, records: Sequence[Record]) -> Prepared:
        """First stage: decode and classify a batch, and correlate it (CPU only, except loading a
        partition's correlation changelog the first time it shows up)."""
        started = time.monotonic()
        good, bad = split(records, self.max_bytes, self.source_keys)
        joins, failed = learn_each(good)
        correlated = None
        if self.correlation is not None:
            topic = records[0].position.topic if records else ""
            items: Iterable[tuple[Any, int, int]]
            if not bad and not failed:  # the usual batch: every record decoded, in order
                items = ((p.event, p.position.partition, p.position.offset) for p in good)
            else:
                rejected = {r.record.position for r in bad} | set(failed)
                events = {p.position: p.event for p in good}
                items = ((None if rec.position in rejected else events[rec.position], rec.position.partition,
                          rec.position.offset) for rec in records)

            def on_error(partition: int, offset: int, exc: Exception) -> None:
                pos = Position(topic, partition, offset)
                log.error("correlating %s raised %r; rejecting it", pos, exc)
                failed[pos] = internal_error(exc)

            correlated = self.correlation.correlate(items, on_error=on_error)
        if failed:
            # Records that failed after decoding go to the DLQ like undecodable ones.
            by_position = {r.position: r for r in records}
            bad = sorted([*bad, *(Rejection(by_position[pos], err) for pos, err in failed.items())],
                         key=lambda r: r.record.position)
            if correlated is not None:
                for p in good:
                    if p.position in failed:
                        correlated.chains.pop(p.event.id, None)
            good = [p for p in good if p.position not in failed]
        return Prepared(len(records), good, bad, correlated, joins, started)

    def finish(self, prepared: Prepared) -> WriteResult:
        """Second stage: rejections to the DLQ, then the events to the store."""
        good, bad = prepared.good, prepared.bad
        for r in bad:
            log.warning("rejected %s to DLQ: %s", r.record.position, r.error.message)
        if bad:
            self.send_dlq(bad)
        result = self._write(good, prepared.correlated, prepared.joins or [])
        if self.correlation is not None:
            self.people.learn(prepared.joins or ())
            result = replace(result, chains=self.chains_records(result.kept, prepared.correlated))
        with self.counters.lock:
            c = self.counters
            c.records += prepared.records
            c.stored += result.inserted
            c.duplicates += result.duplicates
            c.rejected += len(bad)
            c.batches += 1
            c.last_batch_at = time.time()
            c.note(prepared)
        return result

    def chains_records(self, kept: Sequence[Pending], correlated: Correlated | None) -> dict[int, list[tuple[bytes, bytes]]]:
        """The ``<prefix>.chains`` records of the events a write kept, per input partition, in
        offset order: key = scope, value = :func:`pipeline.rules.engine.chains_record` (the envelope
        as received, its chain id, its person, the chain ids it merged)."""
        c = correlated or Correlated()
        merged: dict[str, list[str]] = {}
        for alias in c.aliases:
            merged.setdefault(alias.event_id, []).append(alias.old_chain_id)
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        chain_of, person_of, no_merge = c.chains.get, self.people.person, ()
        persons: dict[tuple[str, str], str | None] = {}  # a batch has few distinct actors
        for p in kept:
            e = p.event
            actor = e.actor
            who = (actor.id, actor.principal)
            person = persons[who] if who in persons else persons.setdefault(who, person_of(*who))
            value = chains_record(p.envelope, chain_of(e.id), person, merged.get(e.id, no_merge))
            part = out.get(p.position.partition)
            if part is None:
                part = out[p.position.partition] = []
            part.append((e.scope.encode(), value))
        return out

    def _write(self, good: list[Pending], correlated: Correlated | None, joins: list[Join]) -> WriteResult:
        delay = 0.2
        c = correlated or Correlated()
        while True:
            try:
                if time.time() < self.fail_store_until:
                    raise StoreError("injected store failure (CAUSELOG_FAULT_STORE_FAIL_UNTIL, test only)")
                if joins:
                    write_joins(self.writer.store, joins)
                logs = self.correlation.log_snapshot() if self.integrity and self.correlation else None
                result = self.writer.write(good, now=self.clock(), chains=c.chains, heads=c.heads, edges=c.edges,
                                           aliases=c.aliases, logs=logs)
                if logs is not None and self.correlation is not None:
                    self.correlation.install_logs(result.logs)
            except StoreError as exc:
                first = good[0].position if good else "-"
                log.error("store write of %d events from %s failed, retrying in %.1fs: %s", len(good), first, delay, exc)
                with self.counters.lock:
                    self.counters.store_retries += 1
                    self.counters.store_failing_since = self.counters.store_failing_since or time.time()
                    self.counters.store_error = str(exc)[:500]
                time.sleep(delay)
                delay = min(self.max_backoff, delay * 2)
                continue
            if self.counters.store_failing_since:
                log.warning("store writes succeed again")
                with self.counters.lock:
                    self.counters.store_failing_since = 0.0
                    self.counters.store_error = ""
            return result
