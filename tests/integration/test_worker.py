"""The worker on a real broker: storage, DLQ, restarts and replays."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from factories import event_bytes, event_dict, malformed_records
from kafka_stack import Stack, header

from pipeline.correlate import components
from pipeline.model import decode_dict

pytestmark = pytest.mark.integration


def chains_ids(stack: Stack, expected: int) -> list[str]:
    """The event ids on ``<prefix>.chains`` (committed records only), in topic order."""
    from pipeline.rules.engine import decode_item

    return [decode_item(m.value()).event["id"] for m in stack.read_topic(stack.settings.topic_chains, expected)]


@pytest.mark.parametrize("mode", ["batch", "agent"])
def test_valid_events_stored_and_malformed_go_to_dlq_with_reason(stack: Stack, mode: str) -> None:
    stack.env["CAUSELOG_INGEST"] = mode
    valid = [event_bytes(i) for i in range(10_000)]
    bad = malformed_records(100, stack.settings.max_event_bytes)
    # Interleave so rejections happen inside batches, not only at the edges.
    records = list(valid)
    for k, (_, value) in enumerate(bad):
        records.insert(k * 97 + 13, value)
    stack.produce(records)
    stack.start_worker()
    counters = stack.wait_records(len(records))

    ids = {r[0] for r in stack.sql("SELECT id FROM DB.events")}
    assert ids == {event_dict(i)["id"] for i in range(10_000)}
    assert stack.sql("SELECT count() FROM DB.events")[0][0] == 10_000
    assert counters["stored"] == 10_000 and counters["rejected"] == 100

    dlq = stack.read_topic(stack.settings.topic_dlq, expected=100)
    assert len(dlq) == 100
    reasons = Counter(header(m, "reason") for m in dlq)
    assert reasons == Counter(reason for reason, _ in bad)
    for m in dlq:
        assert header(m, "error")
        origin = header(m, "origin")
        assert origin and origin.startswith(f"{stack.settings.topic_changes}[") and m.key().decode() == origin
    # The DLQ keeps the original bytes, verbatim.
    assert sorted(m.value() for m in dlq) == sorted(v for _, v in bad)
    # Links land through the materialized view in the same insert.
    assert stack.sql("SELECT count() FROM DB.event_links")[0][0] == 20_000
    # Both ingest modes correlate: chains of ten (one session each), rejected records skipped.
    want = components(decode_dict(event_dict(i)) for i in range(10_000))
    assert dict(stack.sql("SELECT id, chain_id FROM DB.v_event_chains")) == want
    assert len(set(want.values())) == 1_000
    # Every stored event is on <prefix>.chains with the chain id it was stored with, keyed by
    # scope, on the partition it came from; exactly once in batch mode (agent mode: at least once).
    from pipeline.rules.engine import decode_item

    chains = stack.read_topic(stack.settings.topic_chains, 10_000)
    changes_partition = {r[0]: r[1] for r in stack.sql("SELECT id, kafka_partition FROM DB.events")}
    stored = dict(stack.sql("SELECT id, chain_id FROM DB.events"))
    items = [(m, decode_item(m.value())) for m in chains]
    assert {i.event["id"]: i.chain_id for _, i in items} == stored
    assert all(m.key() == b"acme" and m.partition() == changes_partition[i.event["id"]] for m, i in items)
    if mode == "batch":
        assert len(items) == 10_000


def test_sigkill_mid_stream_then_restart_stores_every_event_once(stack: Stack) -> None:
    n = 50_000
    # Small batches: the kill must land while most of the stream is still to be stored.
    stack.env["CAUSELOG_BATCH_SIZE"] = "2000"
    stack.produce([event_bytes(i) for i in range(n)])
    worker = stack.start_worker()
    # Kill once part of the stream is stored, so the crash lands mid-stream.
    deadline = time.monotonic() + 120
    while stack.sql("SELECT count() FROM DB.events")[0][0] < 5_000:
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    stack.workers = []
    stack.start_worker()
    stack.wait_rows(n)
    time.sleep(2)  # anything duplicated would arrive now
    total, distinct = stack.sql("SELECT count(), uniqExact(id) FROM DB.events")[0]
    assert (total, distinct) == (n, n), f"{total} rows, {distinct} distinct"
    # The second worker did real work: the kill landed mid-stream, not after the end.
    assert stack.stats()["worker"]["stored"] > 0
    ids = {r[0] for r in stack.sql("SELECT id FROM DB.events")}
    assert ids == {event_dict(i)["id"] for i in range(n)}
    # <prefix>.chains: every stored event exactly once, in offset order, despite the kill.
    emitted = chains_ids(stack, n)
    assert emitted == [event_dict(i)["id"] for i in range(n)]


def test_replaying_the_same_input_stores_nothing_twice(stack: Stack) -> None:
    batch = [event_bytes(i) for i in range(2_000)]
    stack.produce(batch)
    stack.start_worker()
    stack.wait_records(2_000)
    stack.produce(batch)  # the same input again: new offsets, same ids
    counters = stack.wait_records(4_000)
    assert stack.sql("SELECT count(), uniqExact(id) FROM DB.events")[0] == [2_000, 2_000]
    assert counters["duplicates"] == 2_000 and counters["stored"] == 2_000
    # Duplicates the writer dropped never reach <prefix>.chains.
    ids = [event_dict(i)["id"] for i in range(2_000)]
    assert chains_ids(stack, 2_000) == ids
    # And across a restart of the worker with a fresh consumer group (full re-read).
    stack.stop_workers()
    stack.env["CAUSELOG_GROUP"] += "-again"
    stack.settings = type(stack.settings)(**{**vars(stack.settings), "group": stack.env["CAUSELOG_GROUP"]})
    stack.start_worker()
    counters = stack.wait_records(4_000)
    assert counters["duplicates"] == 4_000
    assert stack.sql("SELECT count() FROM DB.events")[0][0] == 2_000
    # A new group re-reads everything: the events stored from the very records it re-reads are
    # emitted again (it cannot tell that from a crash before a checkpoint), the duplicates not.
    assert chains_ids(stack, 4_000) == ids + ids


def test_the_worker_refuses_a_chains_topic_with_fewer_partitions_than_changes(stack: Stack) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipeline.bus.checkpoint import Changelog
    from pipeline.errors import BusError

    admin = AdminClient({"bootstrap.servers": stack.settings.kafka_bootstrap})
    name = stack.settings.topic_chains
    admin.delete_topics([name])[name].result(30)
    deadline = time.monotonic() + 30
    while True:  # deletion completes asynchronously
        try:
            admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    with pytest.raises(BusError, match=rf"{name} has [01] partitions but .*changes has 4"):
        Changelog(stack.settings).check_partitions()
