"""Store writes fail for 30 s (test-only CAUSELOG_FAULT_STORE_FAIL_UNTIL): the worker retries,
commits nothing meanwhile, says so on /health and in `status`, and afterwards every event is
stored exactly once. Also a full disk under the embedded store (a small tmpfs), where the
machine allows mounting one."""

from __future__ import annotations

import os
import subprocess
import time

import orjson
import pytest
from factories import event_bytes
from kafka_stack import Stack
from test_broker_outage import wait_status_ok

pytestmark = pytest.mark.integration

N = 4_000


def committed_total(stack: Stack) -> int:
    from pipeline.bus import consumer_lag

    return sum(max(0, p["committed"]) for p in consumer_lag(stack.settings).values())


def test_store_failing_for_30s_is_retried_nothing_committed_then_all_stored_once(fstack: Stack) -> None:
    fail_until = time.time() + 30
    fstack.env["CAUSELOG_FAULT_STORE_FAIL_UNTIL"] = str(fail_until)
    fstack.start_worker()
    fstack.produce([event_bytes(i) for i in range(N)], key=b"")
    # While writes fail: health is 503 with the reason, status exits 1, no offset is committed.
    deadline = time.monotonic() + 20
    health: dict = {}
    while time.monotonic() < deadline:
        from pipeline.cli import api

        health = api.health(fstack.settings) or {}
        if not health.get("ok", True):
            break
        time.sleep(0.5)
    assert health.get("ok") is False and any("store writes failing" in p for p in health["problems"]), health
    status = fstack.cli("status", "--json")
    assert status.returncode == 1
    assert "store writes failing" in status.stdout
    while time.time() < fail_until - 3:
        assert committed_total(fstack) == 0
        assert fstack.sql("SELECT count() FROM DB.events") == [[0]]
        time.sleep(2)
    # After recovery: everything once, lag 0, healthy, same process.
    fstack.wait_rows(N, timeout=120)
    assert fstack.sql("SELECT count(), uniqExact(id) FROM DB.events") == [[N, N]]
    wait_status_ok(fstack)
    assert fstack.stats()["worker"]["store_retries"] >= 3
    assert all(w.poll() is None for w in fstack.workers)


def _mount_tmpfs(path: str, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


def test_full_disk_under_the_store_is_retried_until_there_is_room(fstack: Stack) -> None:
    chdb = str(fstack.settings.chdb_path)
    if not _mount_tmpfs(chdb, "24m"):
        pytest.skip("mounting a tmpfs needs root (mount -t tmpfs); cannot simulate a full disk here")
    try:
        fstack.start_worker()
        # Incompressible payloads, well beyond the 24 MB the store has.
        n = 1_200
        fstack.produce([event_bytes(i, pad=1) .replace(b'"note":"x"', b'"note":"' + os.urandom(24_000).hex().encode()
                                                     + b'"') for i in range(n)], key=b"")
        deadline = time.monotonic() + 60
        from pipeline.cli import api

        while time.monotonic() < deadline:
            health = api.health(fstack.settings) or {}
            if not health.get("ok", True):
                break
            time.sleep(0.5)
        assert health.get("ok") is False, health
        assert all(w.poll() is None for w in fstack.workers), fstack.log_tail()
        subprocess.run(["mount", "-o", "remount,size=512m", chdb], check=True)
        fstack.wait_rows(n, timeout=120)
        assert fstack.sql("SELECT count(), uniqExact(id) FROM DB.events") == [[n, n]]
        report = wait_status_ok(fstack)
        assert report["worker"]["ok"]
    finally:
        fstack.stop_workers()
        subprocess.run(["umount", "-l", chdb], capture_output=True)
    assert orjson.dumps(report)
