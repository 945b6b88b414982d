"""Real Kafka for integration tests: started once per session by deploy/kafka/kafka.sh.

With ``KAFKA_BOOTSTRAP`` set, that cluster is used and nothing is started. Every test gets its
own topic prefix, consumer group, API port and CAUSELOG_HOME (so its own chDB store). The
helpers live in ``kafka_stack`` (a uniquely named module: tests import it, never ``conftest``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_stack import KAFKA_SH, Stack, free_port


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    home = tmp_path_factory.mktemp("kafka-home")
    env = dict(os.environ, CAUSELOG_HOME=str(home), CAUSELOG_KAFKA_PORT=str(free_port()),
               CAUSELOG_KAFKA_CONTROLLER_PORT=str(free_port()), PYTHON=sys.executable)
    started = subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"could not start Kafka:\n{started.stdout}\n{started.stderr}")
    try:
        yield f"127.0.0.1:{env['CAUSELOG_KAFKA_PORT']}"
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "stop"], env=env, capture_output=True)


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(kafka_bootstrap, tmp_path)
    s.ensure_topics()
    try:
        yield s
    finally:
        s.stop_workers(signal.SIGKILL)


