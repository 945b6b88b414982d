"""`causelog ingest debezium` on a real broker: exactly once through a Kafka transaction per batch.

Input: a Debezium-like topic holding the four real Debezium serde test events (MySQL connector,
with and without the schema envelope; see ../shared/data/PROVENANCE.md), ~2,000 synthetic
PostgreSQL-connector change events, malformed records and a tombstone. The changes topic must
hold exactly the events a clean in-process conversion gives, the DLQ the malformed records with
their reason, and a second run must add nothing. Then a 30,000-record input is relayed, the
relay killed with SIGKILL inside an open transaction once some (not all) batches are committed,
and restarted: the changes topic holds every event exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_stack import Stack, header

from pipeline.errors import DecodeError
from pipeline.model import decode
from pipeline.sources import debezium

pytestmark = pytest.mark.integration

SERDE = Path(__file__).resolve().parents[3] / "shared" / "data" / "database" / "debezium-core-serde"
SERVER = "pg1"

# Until the lead registers the command in `causelog ingest`, run the CLI with it added.
_CLI = (
    "from pipeline.cli.ingest import ingest\n"
    "from pipeline.cli import ingest_debezium\n"
    "if 'debezium' not in ingest.commands: ingest_debezium.register(ingest)\n"
    "from pipeline.cli.main import main\n"
    "main()\n"
)


def _args(stack: Stack, *args: str) -> list[str]:
    return [sys.executable, "-c", _CLI, *args]


def _causelog(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_args(stack, *args), env=stack.env, capture_output=True, text=True, timeout=120)
    proc.stderr = " ".join(proc.stderr.split())  # rich wraps lines at 80 columns
    return proc


def _create_topic(stack: Stack, partitions: int = 3) -> str:
    name = f"{SERVER}.public.orders.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.settings.kafka_bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5).topics.get(name)
        if md is not None and md.error is None and all(p.leader >= 0 for p in md.partitions.values()):
            return name
        time.sleep(0.1)
    raise AssertionError(f"topic {name} has no leader")


def _produce(stack: Stack, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    p = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 20})
    for n, (key, value) in enumerate(records):
        while True:
            try:
                # keyless records go round the partitions; keyed ones by key
                p.produce(topic, value=value, key=key, partition=n % 3 if key is None else -1)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def _synthetic(n: int, start: int = 0) -> list[tuple[bytes | None, bytes | None]]:
    """``n`` PostgreSQL-connector change events (c/u/d on rows 0.., some with the schema envelope)."""
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(start, start + n):
        row = i // 3
        op = "cud"[i % 3]
        before = None if op == "c" else {"id": row, "status": "new", "total": row * 10, "email": f"u{row}@x.io"}
        after = None if op == "d" else {"id": row, "status": "new" if op == "c" else "paid", "total": row * 10,
                                        "email": f"u{row}@x.io"}
        payload = {
            "before": before, "after": after, "op": op, "ts_ms": 1_764_000_000_000 + i,
            "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": SERVER,
                       "ts_ms": 1_764_000_000_000 + i, "snapshot": "false", "db": "shop", "schema": "public",
                       "table": "orders", "txId": 5000 + i // 4, "lsn": 1_000_000 + 16 * i, "xmin": None},
            "transaction": None,
        }
        value: dict[str, Any] = payload
        key: dict[str, Any] = {"id": row}
        if i % 5 == 0:
            value = {"schema": {"type": "struct", "name": f"{SERVER}.public.orders.Envelope", "optional": False,
                                "fields": []}, "payload": payload}
            key = {"schema": {"type": "struct", "name": f"{SERVER}.public.orders.Key", "fields": []},
                   "payload": {"id": row}}
        out.append((orjson.dumps(key), orjson.dumps(value)))
    return out


def _expected(topic: str, records: list[tuple[bytes | None, bytes | None]]) -> tuple[Counter[str], int]:
    """Event ids a clean in-process conversion gives, and the number of records it rejects."""
    ids: Counter[str] = Counter()
    rejected = 0
    for key, value in records:
        try:
            doc = None if value is None else orjson.loads(value)
            events = debezium.to_events(doc, scope="default", topic=topic, key=orjson.loads(key) if key else None,
                                        server=SERVER)
        except (orjson.JSONDecodeError, DecodeError):
            rejected += 1
            continue
        ids.update(e.id for e in events)
    return ids, rejected


def _read_all(stack: Stack, topic: str, timeout: float = 60, isolation: str = "read_committed") -> list[Any]:
    """Every committed record of ``topic`` (or every record, ``read_uncommitted``), up to its end."""
    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "isolation.level": isolation})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in md.partitions]
        ends = {}
        for tp in parts:
            low, high = c.get_watermark_offsets(tp, timeout=10)
            if high > low:  # an empty partition has no position to reach
                ends[tp.partition] = high
        c.assign(parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if not m.error():
                    out.append(m)
            pos = {tp.partition: tp.offset for tp in c.position(parts)}
            if all(pos[p] >= end for p, end in ends.items()):
                return out
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        c.close()


def _committed(stack: Stack, group: str, topic: str) -> int:
    # read_uncommitted: do not wait for offsets pending in an open (or orphaned) transaction
    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": group,
                  "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


@pytest.fixture
def serde_records() -> list[tuple[bytes | None, bytes | None]]:
    files = sorted(SERDE.glob("serde-*.json"))
    if len(files) != 4:
        pytest.skip(f"the Debezium serde test events are not in {SERDE} (see ../shared/data/PROVENANCE.md)")
    return [(b'{"id": 1004}', f.read_bytes()) for f in files]


def test_ingest_debezium_exactly_once(stack: Stack, serde_records: list[tuple[bytes | None, bytes | None]]) -> None:
    topic = _create_topic(stack)
    malformed: list[tuple[bytes | None, bytes | None]] = [
        (b'{"id": 1}', b'{"op": "c", "after": {"id": 1'),  # truncated JSON
        (None, b"not json at all"),
        (b'{"id": 2}', orjson.dumps({"op": "x", "after": {"id": 2}, "source": {"connector": "postgresql",
                                                                             "ts_ms": 1_764_000_000_000}})),
    ]
    tombstone: list[tuple[bytes | None, bytes | None]] = [(b'{"id": 0}', None)]
    records = serde_records + _synthetic(2000) + malformed + tombstone
    _produce(stack, topic, records)
    expected, rejected = _expected(topic, records)
    assert rejected == len(malformed)
    assert sum(expected.values()) == len(records) - len(malformed) - len(tombstone)

    first = _causelog(stack, "ingest", "debezium", "--topic", topic, "--server", SERVER)
    assert first.returncode == 1, first.stderr  # records were rejected to the DLQ
    assert f"debezium: {len(records):,} records -> {sum(expected.values()):,} events" in first.stderr, first.stderr
    assert "3 rejected to the DLQ (bad_json 2, invalid_value 1)" in first.stderr, first.stderr
    assert "tombstone 1" in first.stderr

    changes = _read_all(stack, stack.settings.topic_changes)
    events = [decode(m.value()) for m in changes]
    assert Counter(e.id for e in events) == expected
    # Repeated ids only among the real files: with/without schema is the same change, and so are
    # the two updates at the same binlog position and key (one carries an extra column).
    real, _ = _expected(topic, serde_records)
    assert {i for i, n in Counter(e.id for e in events).items() if n > 1} == {i for i, n in real.items() if n > 1}
    assert len(real) == 2
    assert {m.key() for m in changes} == {b"default"}
    assert all(e.type == "data.changed" and e.source == f"debezium://{SERVER}" for e in events)
    pg = [e for e in events if e.target.name == "orders"]
    assert len(pg) == 2000 and all(any(str(k).startswith(f"request:pgtx:{SERVER}:") for k in e.links) for e in pg)

    dlq = _read_all(stack, stack.settings.topic_dlq)
    assert sorted(header(m, "reason") or "" for m in dlq) == ["bad_json", "bad_json", "invalid_value"]
    assert all(header(m, "source") == "debezium" for m in dlq)
    for m in dlq:
        assert (m.key() or b"").decode() == header(m, "origin")
        assert (m.key() or b"").decode().startswith(f"debezium:{topic}[")
    assert {m.value() for m in dlq} == {v for _, v in malformed}

    # offsets were committed in the transactions: a second run finds nothing new
    again = _causelog(stack, "ingest", "debezium", "--topic", topic, "--server", SERVER)
    assert again.returncode == 0, again.stderr
    assert "debezium: 0 records -> 0 events" in again.stderr, again.stderr
    assert len(_read_all(stack, stack.settings.topic_changes)) == len(changes)


def test_kill_mid_run_then_restart_is_exactly_once(stack: Stack) -> None:
    topic = _create_topic(stack)
    total = 30_000
    records = _synthetic(total)
    _produce(stack, topic, records)
    expected, rejected = _expected(topic, records)
    assert rejected == 0 and len(expected) == total
    group = f"causelog-debezium-{SERVER}"

    proc = subprocess.Popen(_args(stack, "ingest", "debezium", "--topic", topic, "--server", SERVER,
                                  "--batch", "2000"), env=stack.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = _committed(stack, group, topic)
        if done >= 4000:
            time.sleep(0.15)  # a commit was just seen: let the next transaction get under way
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the relay ended before it could be killed: {proc.communicate()[1]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.communicate()
    at_kill = _committed(stack, group, topic)
    assert 0 < at_kill < total, f"not killed mid-stream: {at_kill} of {total} committed"
    # The killed relay's last transaction is still open (it holds the topic's last stable offset
    # until the restarted relay fences it): its records are there, but only read_uncommitted.
    written = len(_read_all(stack, stack.settings.topic_changes, isolation="read_uncommitted"))
    # Usually the kill lands inside an open transaction (written > at_kill); that is timing, so it
    # is reported, not asserted: exactly-once below must hold either way.
    print(f"killed with {at_kill} of {total} records committed, {written} events written")

    rerun = _causelog(stack, "ingest", "debezium", "--topic", topic, "--server", SERVER, "--batch", "2000")
    assert rerun.returncode == 0, rerun.stderr
    assert f"debezium: {total - at_kill:,} records -> {total - at_kill:,} events" in rerun.stderr, rerun.stderr
    ids = Counter(decode(m.value()).id for m in _read_all(stack, stack.settings.topic_changes))
    assert ids == expected  # every event, each exactly once
    assert _committed(stack, group, topic) == total
