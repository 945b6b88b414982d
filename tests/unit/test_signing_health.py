"""A signer that keeps failing does not stop ingestion, but /health says so (issue 14: no worker
task may stop working unseen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.bus.checkpoint import Changelog
from pipeline.settings import load
from pipeline.stream.consumer import BatchConsumer
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import BatchHandler


class FlakySigner:
    """Fails while ``broken`` is set, like a checkpoints table or topic that refuses writes."""

    def __init__(self) -> None:
        self.broken = True
        self.calls = 0

    def committed(self, heads: Any, *, force: bool = False) -> None:
        self.calls += 1
        if self.broken:
            raise OSError("checkpoint directory is read-only")


def test_failing_signer_shows_in_health_and_clears_when_it_recovers(tmp_path: Path) -> None:
    settings = load({"CAUSELOG_HOME": str(tmp_path)})
    correlation = Correlation(Changelog(settings))
    handler = BatchHandler(None, lambda _: None, max_bytes=1 << 20, correlation=correlation)  # type: ignore[arg-type]
    signer = FlakySigner()
    consumer = BatchConsumer(settings, handler, signer=signer, abort=lambda reason: None)  # type: ignore[arg-type]

    consumer._checkpoint()  # nothing to commit; the signer still runs, and fails
    problems = consumer.health()
    assert signer.calls == 1
    assert any("signing checkpoints failing" in p and "read-only" in p for p in problems), problems

    signer.broken = False
    consumer._checkpoint()
    assert signer.calls == 2 and not any("signing" in p for p in consumer.health())
