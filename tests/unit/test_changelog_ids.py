"""The correlation changelog's transactional id: stable for a worker restarted in place, distinct
for workers that run at the same time."""

from __future__ import annotations

from pathlib import Path

from pipeline.bus.checkpoint import Changelog
from pipeline.settings import load


def tid(tmp: Path, **env: str) -> str:
    return Changelog(load({"CAUSELOG_HOME": str(tmp), "CAUSELOG_GROUP": "g1", **env})).transactional_id


def test_same_worker_same_id_other_workers_other_ids(tmp_path: Path) -> None:
    a = tid(tmp_path / "a")
    assert a == tid(tmp_path / "a")  # restarted in place: fences its dead predecessor
    assert a.startswith("g1-correlation-")
    assert a != tid(tmp_path / "b")  # another home
    assert a != tid(tmp_path / "a", CAUSELOG_API="127.0.0.1:7000")  # a second worker on this host
    assert a != tid(tmp_path / "a", CAUSELOG_GROUP="g2")
