"""`causelog status` per partition: the age of the oldest unconsumed record and the stall flag
(CAUSELOG_STALL_SECONDS), from Kafka's offsets and the worker's last commit times."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.bus import kafka
from pipeline.cli import main
from pipeline.settings import load


def report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, oldest: dict[int, float],
           committed_at: dict[str, float] | None) -> dict[int, Any]:
    monkeypatch.setattr(kafka, "oldest_unconsumed", lambda s, lag: oldest)
    s = load({"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_STALL_SECONDS": "60"})
    lag = {0: {"high": 10, "committed": 10, "lag": 0}, 1: {"high": 50, "committed": 20, "lag": 30}}
    health = None if committed_at is None else {"ok": True, "committed_at": committed_at}
    return main._partition_report(s, lag, health)


def test_a_partition_with_old_unconsumed_records_and_no_recent_commit_is_stalled(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = time.time()
    rows = report(monkeypatch, tmp_path, {1: now - 300}, {"1": now - 200})
    assert rows[1]["stalled"] is True
    assert 299 <= rows[1]["oldest_unconsumed_age_s"] <= 310
    assert rows[0]["stalled"] is False and rows[0]["oldest_unconsumed_age_s"] is None


def test_a_partition_that_commits_is_not_stalled_even_with_an_old_backlog(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = time.time()
    rows = report(monkeypatch, tmp_path, {1: now - 300}, {"1": now - 2})
    assert rows[1]["stalled"] is False


def test_fresh_records_are_not_a_stall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = time.time()
    rows = report(monkeypatch, tmp_path, {1: now - 5}, {"1": now - 500})
    assert rows[1]["stalled"] is False


def test_without_a_worker_old_records_are_a_stall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rows = report(monkeypatch, tmp_path, {1: time.time() - 300}, None)
    assert rows[1]["stalled"] is True
