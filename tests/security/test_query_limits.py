"""Issue 14: a user query never stops ingestion (time, rows and memory limits; cancelled with its client).

Before, a heavy ``causelog sql`` held the store's one lock for minutes: nothing was ingested and
the query went on after its client had gone. Now user queries run on read handles of their own,
under ``max_execution_time`` (``CAUSELOG_QUERY_TIMEOUT``), and are killed when the client
disconnects.
"""

from __future__ import annotations

import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from factories import event_bytes
from kafka_stack import Stack
from probe_http import request

pytestmark = pytest.mark.integration

HEAVY = "SELECT count() FROM numbers(100000000000) WHERE NOT ignore(sipHash64(number))"
TIMEOUT = 10


@pytest.fixture
def slow_stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """A worker whose queries may read without bound, so only time (or the client) stops them."""
    s = Stack(kafka_bootstrap, tmp_path, CAUSELOG_QUERY_TIMEOUT=str(TIMEOUT),
              CAUSELOG_QUERY_MAX_ROWS_READ="1000000000000000")
    s.ensure_topics()
    s.start_worker()
    try:
        yield s
    finally:
        s.stop_workers(signal.SIGKILL)


def _admin(stack: Stack) -> str:
    return stack.settings.admin_token_path.read_text().strip()


def _stored(stack: Stack) -> int:
    status, answer = request(stack.settings.api_port, "GET", "/v1/stats?tables=0", token=_admin(stack))
    assert status == 200, answer
    return int(answer["worker"]["stored"])


def _ingest_latency(stack: Stack, first: int, n: int = 20, timeout: float = 30) -> float:
    """Produce ``n`` new events and return the seconds until the worker has stored them."""
    before = _stored(stack)
    t0 = time.monotonic()
    stack.produce([event_bytes(first + i) for i in range(n)])
    while _stored(stack) < before + n:
        assert time.monotonic() - t0 < timeout, f"ingest stalled:\n{stack.log_tail()}"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_ingest_goes_on_while_a_heavy_query_runs_and_the_query_hits_its_timeout(slow_stack: Stack) -> None:
    baseline = [_ingest_latency(slow_stack, 1000 * k) for k in range(1, 4)]
    outcome: dict[str, object] = {}

    def heavy() -> None:
        t0 = time.monotonic()
        outcome["answer"] = request(slow_stack.settings.api_port, "POST", "/v1/sql", token=_admin(slow_stack),
                                    body={"sql": HEAVY}, timeout=TIMEOUT + 60)
        outcome["seconds"] = time.monotonic() - t0

    runner = threading.Thread(target=heavy)
    runner.start()
    time.sleep(0.5)
    during: list[float] = []
    k = 10
    while runner.is_alive():
        during.append(_ingest_latency(slow_stack, 1000 * k))
        k += 1
        time.sleep(0.2)
    runner.join()
    print(f"\ningest latency of 20 events, idle: median {statistics.median(baseline):.3f}s "
          f"max {max(baseline):.3f}s; during the {outcome['seconds']:.1f}s query: {len(during)} batches, "
          f"median {statistics.median(during):.3f}s max {max(during):.3f}s")
    status, answer = outcome["answer"]  # type: ignore[misc]
    assert status == 400 and "Timeout exceeded" in answer["error"], answer
    assert TIMEOUT - 1 <= float(outcome["seconds"]) < TIMEOUT + 15  # type: ignore[arg-type]
    assert len(during) >= 3, during  # events were stored while the query ran
    assert max(during) < TIMEOUT / 2, during  # and none of them waited for the query


def _running(stack: Stack) -> int:
    status, answer = request(stack.settings.api_port, "POST", "/v1/sql", token=_admin(stack), body={
        "sql": "SELECT count() FROM system.processes WHERE query LIKE '%sipHash64(number)%' "
               "AND query NOT LIKE '%system.processes%'"})
    assert status == 200, answer
    return int(answer["rows"][0][0])


def test_a_query_is_cancelled_when_its_client_disconnects(slow_stack: Stack) -> None:
    body = orjson.dumps({"sql": HEAVY})
    conn = socket.create_connection(("127.0.0.1", slow_stack.settings.api_port))
    conn.sendall(b"POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {_admin(slow_stack)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)
    deadline = time.monotonic() + 5
    while _running(slow_stack) == 0:
        assert time.monotonic() < deadline, "the heavy query never started"
        time.sleep(0.1)
    conn.close()
    t0 = time.monotonic()
    while _running(slow_stack) > 0:
        assert time.monotonic() - t0 < 3, "the query went on after its client had gone"
        time.sleep(0.1)
    print(f"\nquery stopped {time.monotonic() - t0:.2f}s after its client disconnected (timeout {TIMEOUT}s)")
