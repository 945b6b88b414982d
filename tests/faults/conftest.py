"""Fault tests: real processes on a broker of their own (they stop and restart it, so never the
shared one, even when ``KAFKA_BOOTSTRAP`` is set). Helpers live in ``fault_stack``."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_stack import OwnBroker
from kafka_stack import Stack  # after fault_stack, which puts it on sys.path


@pytest.fixture(scope="session")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path_factory.mktemp("fault-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def fstack(own_broker: OwnBroker, tmp_path: Path) -> Iterator[Stack]:
    own_broker.start()  # a previous test may have left it stopped
    s = Stack(own_broker.bootstrap, tmp_path, CAUSELOG_CHECKPOINT_SECONDS="1")
    s.ensure_topics()
    try:
        yield s
    finally:
        s.stop_workers(signal.SIGKILL)
