"""`kill -9` of the worker at random points (some inside the changelog transaction): stored
events, chain rows and DLQ contents equal those of an uninterrupted run of the same input."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from factories import event_bytes, malformed_records
from fault_stack import OwnBroker
from kafka_stack import Stack, header
from test_broker_outage import wait_status_ok

pytestmark = pytest.mark.integration

ROUNDS = 10
CHUNK = 1_200
# Rounds whose worker kills itself inside its 2nd checkpoint transaction (changelog records
# written, offsets not committed yet); the others are killed at a random moment from outside.
IN_TRANSACTION = {2, 5, 8}


def chunk(k: int) -> list[bytes]:
    values = [event_bytes(i) for i in range(k * CHUNK, (k + 1) * CHUNK)]
    bad = [v for _, v in malformed_records(5, 4096) if len(v) < 4096]
    return values[: CHUNK // 2] + bad + values[CHUNK // 2:]


def outcome(stack: Stack) -> dict[str, Any]:
    dlq = stack.read_topic(stack.settings.topic_dlq, 1, timeout=20)
    return {
        "events": stack.sql("SELECT id, chain_id, chain_time, kafka_partition, kafka_offset FROM DB.events "
                            "ORDER BY id"),
        "edges": stack.sql("SELECT DISTINCT scope, key, key_type, from_event, to_event, time, removed "
                           "FROM DB.chain_edges ORDER BY ALL"),
        "aliases": stack.sql("SELECT DISTINCT scope, old_chain_id, new_chain_id, new_head_time, event_id, time "
                             "FROM DB.chain_aliases ORDER BY ALL"),
        # Keys are the origin `<prefix>.changes[p]@offset`; the prefixes differ between the stacks.
        "dlq": sorted({(m.key().partition(b".changes")[2], header(m, "reason"), m.value()) for m in dlq}),
    }


def test_kill_9_at_random_points_changes_nothing(own_broker: OwnBroker, tmp_path: Path) -> None:
    rng = random.Random(14)
    env = {"CAUSELOG_CHECKPOINT_SECONDS": "0.5", "CAUSELOG_BATCH_SIZE": "300"}
    reference = Stack(own_broker.bootstrap, tmp_path / "reference", **env)
    killed = Stack(own_broker.bootstrap, tmp_path / "killed", **env)
    try:
        for s in (reference, killed):
            s.ensure_topics()
        for k in range(ROUNDS):
            reference.produce(chunk(k), key=b"")
        reference.start_worker()
        kills = []
        for k in range(ROUNDS):
            killed.produce(chunk(k), key=b"")
            if k in IN_TRANSACTION:
                killed.env["CAUSELOG_FAULT_KILL_IN_CHECKPOINT"] = "2"
            worker = killed.start_worker()
            killed.env.pop("CAUSELOG_FAULT_KILL_IN_CHECKPOINT", None)
            if k in IN_TRANSACTION:
                worker.wait(60)
                assert worker.returncode == -signal.SIGKILL, killed.log_tail()
                kills.append("in-transaction")
            else:
                delay = rng.uniform(0.0, 1.5)
                time.sleep(delay)
                worker.kill()
                worker.wait()
                kills.append(f"{delay:.2f}s")
            killed.workers.clear()
        assert len(kills) >= 10
        killed.start_worker()
        wait_status_ok(killed, timeout=120)
        wait_status_ok(reference, timeout=120)
        want, got = outcome(reference), outcome(killed)
        total = ROUNDS * CHUNK
        assert len(want["events"]) == total
        assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}, kills
        for key in ("events", "edges", "aliases", "dlq"):
            assert got[key] == want[key], key
    finally:
        for s in (reference, killed):
            s.stop_workers(signal.SIGKILL)
