"""The broker stops for 20 s while a source produces and the worker ingests, then comes back.

Regression (issue 14): after the consumer group session timed out the worker never resumed,
stayed at lag 15,000 and `status` said `worker up`. Now the source and the worker resume by
themselves and every event is stored exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import orjson
import pytest
from factories import event_bytes
from fault_stack import OwnBroker, Supervisor
from kafka_stack import Stack

pytestmark = pytest.mark.integration

N = 12_000


def test_broker_down_20s_mid_stream_then_everything_stored_once(fstack: Stack, own_broker: OwnBroker) -> None:
    fstack.start_worker()
    with Supervisor(fstack) as supervisor:
        _outage(fstack, own_broker)
    # The worker resumes in place (rewind); a wedged client library makes it exit 75 for the
    # supervisor to restart (README, "What the worker does with bad input"). Never anything else.
    assert supervisor.bad_exits == []


def _outage(fstack: Stack, own_broker: OwnBroker) -> None:
    # The source: `causelog produce -`, fed at a steady pace so the outage hits mid-stream.
    source = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "produce", "-"], env=fstack.env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert source.stdin is not None

    def feed() -> None:
        assert source.stdin is not None
        for start in range(0, N, 100):  # ~36 s of input
            source.stdin.write(b"".join(event_bytes(i) + b"\n" for i in range(start, start + 100)))
            source.stdin.flush()
            time.sleep(0.3)
        source.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    fstack.wait_rows(2_000, timeout=120)
    own_broker.stop()
    time.sleep(20)
    own_broker.start()
    feeder.join(120)
    source.wait(240)
    assert source.stderr is not None
    err = source.stderr.read()
    assert source.returncode == 0, err.decode()
    assert f"sent {N:,} events".encode() in err
    fstack.wait_rows(N, timeout=180)
    assert fstack.sql("SELECT count(), uniqExact(id) FROM DB.events") == [[N, N]]
    # The worker caught up by itself: no lag left, healthy.
    wait_status_ok(fstack, timeout=150)


def wait_status_ok(stack: Stack, timeout: float = 60) -> dict:
    """Wait until `causelog status --json` exits 0 with lag 0; return its report."""
    deadline = time.monotonic() + timeout
    while True:
        status = stack.cli("status", "--json")
        report = orjson.loads(status.stdout) if status.stdout.strip() else {}
        if status.returncode == 0 and report.get("lag") == 0:
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"status {status.returncode}: {status.stdout}{status.stderr}\n{stack.log_tail()}")
        time.sleep(1)
