"""Security probes against a running worker on the test broker (see tests/integration/kafka_stack.py).

The broker fixtures are the integration suite's, shared through ``kafka_stack``; ``secured`` is one
worker per module with the defaults a user gets (query audit on, default query limits).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from kafka_stack import Stack, kafka_bootstrap, stack  # noqa: E402

__all__ = ["kafka_bootstrap", "secured", "stack"]


@pytest.fixture(scope="module")
def secured(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker with the user's defaults (audit on, CAUSELOG_QUERY_MAX_ROWS 100000), shared by a module."""
    s = Stack(kafka_bootstrap, tmp_path_factory.mktemp("secured"), CAUSELOG_AUDIT_QUERIES="1",
              CAUSELOG_QUERY_MAX_ROWS="100000")
    s.ensure_topics()
    s.start_worker()
    try:
        yield s
    finally:
        s.stop_workers(signal.SIGKILL)
