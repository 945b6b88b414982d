"""The worker's batch step (pipeline/stream/ingest.py) without Kafka: a real EventWriter on the
test store and a recording DLQ sender.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from factories import event_bytes, event_dict, malformed_records

from pipeline.errors import BusError, ConfigError, DecodeError, StoreError
from pipeline.model import decode
from pipeline.store import EventWriter, Pending, Position, Store, WriteResult
from pipeline.stream import ingest
from pipeline.stream.ingest import BatchHandler, Counters, Record, Rejection, split

MAX = 4096
NOW = datetime(2026, 11, 28, 12, 0, 0, 250000, tzinfo=UTC)
TOPIC = "causelog.changes"


def rec(value: bytes | None, offset: int, partition: int = 0) -> Record:
    return Record(value, Position(TOPIC, partition, offset))


def good(i: int, offset: int, partition: int = 0) -> Record:
    return rec(event_bytes(i), offset, partition)


def count(store: Store) -> int:
    return int(store.query(f"SELECT count() FROM {store.database}.events").rows[0][0])


class DLQ:
    """A send_dlq that records what it was given, and the events stored at that moment."""

    def __init__(self, store: Store | None = None, log: list[str] | None = None) -> None:
        self.store = store
        self.log = log if log is not None else []
        self.sent: list[Rejection] = []
        self.stored_when_called: list[int] = []

    def __call__(self, rejections: Sequence[Rejection]) -> None:
        self.log.append("dlq")
        if self.store is not None:
            self.stored_when_called.append(count(self.store))
        self.sent.extend(rejections)


class LoggingWriter:
    """Delegates to a real EventWriter and logs each call."""

    def __init__(self, inner: EventWriter, log: list[str]) -> None:
        self.inner = inner
        self.log = log
        self.batches: list[list[Pending]] = []

    def write(self, batch: Sequence[Pending], *, now: datetime | None = None, **chains: Any) -> WriteResult:
        self.log.append("write")
        self.batches.append(list(batch))
        return self.inner.write(batch, now=now, **chains)


class FlakyWriter:
    """Raises ``error`` for the first ``failures`` calls, then delegates to a real EventWriter."""

    def __init__(self, inner: EventWriter, failures: int, error: Exception | None = None) -> None:
        self.inner = inner
        self.failures = failures
        self.error = error or StoreError("ClickHouse (test) failed on insert: connection refused")
        self.calls = 0

    def write(self, batch: Sequence[Pending], *, now: datetime | None = None, **chains: Any) -> WriteResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.inner.write(batch, now=now, **chains)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(ingest.time, "sleep", recorded.append)
    return recorded


# -- split -----------------------------------------------------------------------------------


def test_split_classifies_good_and_bad_records() -> None:
    bad = malformed_records(5, MAX)  # bad_json, missing_field, wrong_type, invalid_value, oversized
    records = [good(1, 0), rec(None, 1)]
    records += [rec(value, 2 + n) for n, (_, value) in enumerate(bad)]
    records.append(good(2, 7))

    ok, rejected = split(records, MAX)

    assert [(p.event.id, p.position.offset) for p in ok] == [
        (event_dict(1)["id"], 0),
        (event_dict(2)["id"], 7),
    ]
    assert [p.envelope for p in ok] == [event_bytes(1), event_bytes(2)]
    # The worker's view: every envelope field as decode() gives it, raw/diff left as JSON.
    for p, i in zip(ok, (1, 2), strict=True):
        full = decode(event_bytes(i))
        for name in ("id", "time", "scope", "actor", "target", "links", "source_seq", "observed_time"):
            assert getattr(p.event, name) == getattr(full, name)
    assert [(r.record.position.offset, r.error.reason) for r in rejected] == [
        (1, "bad_json"),
        (2, "bad_json"),
        (3, "missing_field"),
        (4, "wrong_type"),
        (5, "invalid_value"),
        (6, "oversized"),
    ]
    assert rejected[0].record.value is None
    assert "tombstone" in rejected[0].error.detail
    assert rejected[3].error.field == "$.links"
    assert rejected[2].error.field == "$.actor"


@pytest.mark.parametrize(
    ("size_delta", "accepted"),
    [(0, True), (1, False)],
    ids=["at-limit", "one-byte-over"],
)
def test_split_size_limit_is_inclusive(size_delta: int, accepted: bool) -> None:
    value = event_bytes(3)
    ok, rejected = split([rec(value, 0)], len(value) - size_delta)
    assert (len(ok), len(rejected)) == ((1, 0) if accepted else (0, 1))
    if not accepted:
        assert rejected[0].error.reason == "oversized"
        assert str(len(value)) in rejected[0].error.detail


def test_split_empty_batch() -> None:
    assert split([], MAX) == ([], [])


# -- Rejection headers -----------------------------------------------------------------------


def test_rejection_headers_carry_reason_error_field_and_origin() -> None:
    value = orjson.dumps(dict(event_dict(1), outcome="exploded"))
    _, [rejection] = split([rec(value, 1234, partition=3)], MAX)

    headers = rejection.headers()
    assert [k for k, _ in headers] == [
        "reason", "error", "field", "origin", "origin.topic", "origin.partition", "origin.offset",
    ]  # fmt: skip
    h = dict(headers)
    assert h["reason"] == b"invalid_value"
    assert h["error"] == rejection.error.message.encode()
    assert h["error"].startswith(b"invalid_value at $.outcome: ")
    assert b"'exploded'" in h["error"]
    assert h["field"] == b"$.outcome"
    assert h["origin"] == b"causelog.changes[3]@1234"
    assert (h["origin.topic"], h["origin.partition"], h["origin.offset"]) == (
        b"causelog.changes",
        b"3",
        b"1234",
    )
    assert all(isinstance(v, bytes) for _, v in headers)


def test_rejection_headers_of_a_tombstone_have_an_empty_field() -> None:
    _, [rejection] = split([rec(None, 5)], MAX)
    h = dict(rejection.headers())
    assert h["reason"] == b"bad_json"
    assert h["field"] == b""
    assert h["origin"] == b"causelog.changes[0]@5"


def test_rejection_headers_encode_utf8() -> None:
    err = DecodeError("invalid_value", "bad name", field="$.target.name", value="café")
    h = dict(Rejection(rec(b"{}", 0), err).headers())
    assert "café".encode() in h["error"]


# -- BatchHandler ----------------------------------------------------------------------------


def test_rejections_go_to_the_dlq_before_anything_is_written(store: Store) -> None:
    log: list[str] = []
    dlq = DLQ(store, log)
    writer = LoggingWriter(EventWriter(store), log)
    handler = BatchHandler(writer, dlq, max_bytes=MAX, clock=lambda: NOW)  # type: ignore[arg-type]

    result = handler([good(1, 0), rec(b"not json", 1), good(2, 2), rec(None, 3)])

    assert log == ["dlq", "write"]
    assert dlq.stored_when_called == [0]
    assert [r.record.position.offset for r in dlq.sent] == [1, 3]
    assert [p.position.offset for p in writer.batches[0]] == [0, 2]
    assert result == WriteResult(2, 0)
    assert count(store) == 2


def test_batch_without_rejections_does_not_call_the_dlq(store: Store) -> None:
    dlq = DLQ()
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=MAX)
    assert handler([good(1, 0), good(2, 1)]) == WriteResult(2, 0)
    assert dlq.log == []


def test_batch_of_only_rejections_writes_nothing(store: Store) -> None:
    dlq = DLQ()
    counters = Counters()
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=MAX, counters=counters)
    assert handler([rec(b"[]", 0), rec(None, 1)]) == WriteResult(0, 0)
    assert len(dlq.sent) == 2
    assert count(store) == 0
    assert (counters.records, counters.rejected, counters.stored, counters.batches) == (2, 2, 0, 1)


def test_counters_add_up_over_batches(store: Store, sleeps: list[float]) -> None:
    counters = Counters()
    dlq = DLQ()
    handler = BatchHandler(EventWriter(store), dlq, max_bytes=MAX, counters=counters, clock=lambda: NOW)

    first = handler([good(0, 0), good(1, 1), rec(b"{", 2), good(2, 3), rec(None, 4)])
    # Re-delivery after a crash: 1 and 2 again (duplicates), 3 is new, plus one bad record.
    second = handler([good(1, 1), good(2, 3), good(3, 5), rec(b"x" * (MAX + 1), 6)])
    # The same event twice in one batch counts once as stored and once as duplicate.
    third = handler([good(4, 7), good(4, 8)])

    assert (first, second, third) == (WriteResult(3, 0), WriteResult(1, 2), WriteResult(1, 1))
    snap = counters.snapshot()
    assert {k: snap[k] for k in ("records", "stored", "duplicates", "rejected", "batches", "store_retries")} == {
        "records": 11, "stored": 5, "duplicates": 3, "rejected": 3, "batches": 3, "store_retries": 0,
    }  # fmt: skip
    assert snap["records"] == snap["stored"] + snap["duplicates"] + snap["rejected"]
    assert snap["last_batch_at"] > 0
    assert "lock" not in snap
    assert count(store) == 5
    assert sleeps == []


def test_clock_stamps_ingested_at(store: Store) -> None:
    BatchHandler(EventWriter(store), DLQ(), max_bytes=MAX, clock=lambda: NOW)([good(1, 0)])
    [[ingested, observed]] = store.query(
        f"SELECT ingested_at, observed_time FROM {store.database}.events"
    ).rows
    assert ingested.replace(tzinfo=UTC) == NOW
    assert observed.replace(tzinfo=UTC) == NOW


def test_store_errors_are_retried_with_capped_exponential_backoff(store: Store, sleeps: list[float]) -> None:
    counters = Counters()
    writer = FlakyWriter(EventWriter(store), failures=6)
    handler = BatchHandler(writer, DLQ(), max_bytes=MAX, counters=counters, max_backoff=1.0)  # type: ignore[arg-type]

    result = handler([good(1, 0), good(2, 1), rec(None, 2)])

    assert result == WriteResult(2, 0)
    assert count(store) == 2
    assert writer.calls == 7
    assert sleeps == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert counters.store_retries == 6
    assert (counters.records, counters.stored, counters.rejected, counters.batches) == (3, 2, 1, 1)


def test_backoff_below_the_first_delay_is_capped_immediately(store: Store, sleeps: list[float]) -> None:
    writer = FlakyWriter(EventWriter(store), failures=3)
    handler = BatchHandler(writer, DLQ(), max_bytes=MAX, max_backoff=0.05)  # type: ignore[arg-type]
    handler([good(1, 0)])
    # The first wait is the initial 0.2 s; every later one is capped at max_backoff.
    assert sleeps == pytest.approx([0.2, 0.05, 0.05])


def test_retry_after_a_landed_insert_does_not_duplicate(store: Store, sleeps: list[float]) -> None:
    """The insert landed but the client saw an error: the retry must not store the rows twice."""

    class LandedThenFailed:
        def __init__(self) -> None:
            self.inner = EventWriter(store)
            self.calls = 0

        def write(self, batch: Sequence[Pending], *, now: datetime | None = None, **chains: Any) -> WriteResult:
            self.calls += 1
            result = self.inner.write(batch, now=now, **chains)
            if self.calls == 1:
                raise StoreError("ClickHouse (test) failed on insert: timed out")
            return result

    counters = Counters()
    handler = BatchHandler(LandedThenFailed(), DLQ(), max_bytes=MAX, counters=counters)  # type: ignore[arg-type]
    assert handler([good(1, 0), good(2, 1)]) == WriteResult(0, 2)
    assert count(store) == 2
    assert counters.store_retries == 1
    assert len(sleeps) == 1


def test_dlq_failure_propagates_and_nothing_is_written(store: Store, sleeps: list[float]) -> None:
    log: list[str] = []
    writer = LoggingWriter(EventWriter(store), log)
    counters = Counters()

    def broken_dlq(rejections: Sequence[Rejection]) -> None:
        log.append("dlq")
        raise BusError("DLQ produce failed: broker down")

    handler = BatchHandler(writer, broken_dlq, max_bytes=MAX, counters=counters)  # type: ignore[arg-type]
    with pytest.raises(BusError, match="broker down"):
        handler([good(1, 0), rec(None, 1), good(2, 2)])

    assert log == ["dlq"]
    assert count(store) == 0
    assert counters.snapshot()["records"] == 0
    assert counters.snapshot()["batches"] == 0
    assert sleeps == []


@pytest.mark.parametrize(
    "error",
    [ConfigError("not a store problem"), BusError("bus"), ValueError("plain bug")],
    ids=["config-error", "bus-error", "non-causelog"],
)
def test_other_writer_errors_are_not_retried(store: Store, sleeps: list[float], error: Exception) -> None:
    counters = Counters()
    writer = FlakyWriter(EventWriter(store), failures=1, error=error)
    handler = BatchHandler(writer, DLQ(), max_bytes=MAX, counters=counters)  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        handler([good(1, 0)])
    assert writer.calls == 1
    assert sleeps == []
    assert counters.store_retries == 0
    assert counters.batches == 0


def test_handler_writes_records_from_several_partitions(store: Store) -> None:
    handler = BatchHandler(EventWriter(store), DLQ(), max_bytes=MAX)
    handler([good(1, 10, partition=0), good(2, 10, partition=1), good(3, 11, partition=0)])
    rows = store.query(
        f"SELECT source_seq, kafka_partition, kafka_offset FROM {store.database}.events ORDER BY source_seq"
    ).rows
    assert rows == [["1", 0, 10], ["2", 1, 10], ["3", 0, 11]]
