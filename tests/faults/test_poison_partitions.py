"""A poison record in the middle of 50,000 good ones on every partition.

Regression (issue 14): a JSON object nested ~10,000 levels deep raised RecursionError in the
codec's fallback decoder, the ingest thread died, every later record of the partition waited
forever (the same record was read again after a restart), the malformed records behind it never
reached the DLQ, and `causelog status` said `worker up` and exited 0.
"""

from __future__ import annotations

import orjson
import pytest
from factories import event_bytes, event_dict
from kafka_stack import Stack, header
from test_broker_outage import wait_status_ok

pytestmark = pytest.mark.integration

GOOD = 50_000
PARTITIONS = 4


def poison() -> list[tuple[str, bytes]]:
    """One of each kind of bad bytes per partition: (expected DLQ reason, bytes)."""
    deep = orjson.dumps(dict(event_dict(10**8), raw="RAW")).replace(b'"RAW"', b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
    return [("too_deep", deep), ("too_deep", b"[" * 100_000), ("bad_json", b""), ("bad_json", b"\xff\xfe\x00"),
            ("bad_json", orjson.dumps(dict(event_dict(10**8 + 1), raw="RAW")).replace(b'"RAW"', b"9" * 5000))]


def test_poison_on_every_partition_goes_to_the_dlq_and_everything_else_is_stored(fstack: Stack) -> None:
    bad = poison()
    # Keyed by partition number so every partition gets half its good records, then the poison,
    # then the rest.
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": fstack.settings.kafka_bootstrap, "linger.ms": 50, "acks": "all",
                  "enable.idempotence": True, "message.max.bytes": 4 * 1024 * 1024})
    topic = fstack.settings.topic_changes

    def send(value: bytes, partition: int) -> None:
        while True:
            try:
                p.produce(topic, value, partition=partition)
                return
            except BufferError:
                p.poll(0.1)

    for i in range(GOOD // 2):
        send(event_bytes(i), i % PARTITIONS)
    for part in range(PARTITIONS):
        for _, value in bad:
            send(value, part)
    for i in range(GOOD // 2, GOOD):
        send(event_bytes(i), i % PARTITIONS)
    assert p.flush(60) == 0

    fstack.start_worker()
    fstack.wait_rows(GOOD, timeout=150)
    assert fstack.sql("SELECT count(), uniqExact(id) FROM DB.events") == [[GOOD, GOOD]]
    dlq = fstack.read_topic(fstack.settings.topic_dlq, PARTITIONS * len(bad), timeout=60)
    got = sorted((int(header(m, "origin.partition") or -1), header(m, "reason"), m.value()) for m in dlq)
    want = sorted((part, reason, value) for part in range(PARTITIONS) for reason, value in bad)
    assert got == want
    wait_status_ok(fstack)
    health = fstack.health()
    assert health is not None and health["ok"] and health["problems"] == []
    assert all(w.poll() is None for w in fstack.workers)
