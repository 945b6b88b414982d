"""A Kafka broker the fault tests may stop and restart (deploy/kafka/kafka.sh on free ports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from kafka_stack import KAFKA_SH, free_port  # noqa: E402


class OwnBroker:
    """A single-node broker with its own data directory; ``stop``/``start`` keep the data."""

    def __init__(self, home: Path) -> None:
        self.env = dict(os.environ, CAUSELOG_HOME=str(home), CAUSELOG_KAFKA_PORT=str(free_port()),
                        CAUSELOG_KAFKA_CONTROLLER_PORT=str(free_port()), PYTHON=sys.executable)
        self.env.pop("KAFKA_BOOTSTRAP", None)
        self.bootstrap = f"127.0.0.1:{self.env['CAUSELOG_KAFKA_PORT']}"

    def _sh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(KAFKA_SH), *args], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def running(self) -> bool:
        return self._sh("status").returncode == 0

    def start(self) -> None:
        if self.running():
            return
        done = self._sh("start")
        if done.returncode != 0:
            raise AssertionError(f"could not start Kafka:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        self._sh("stop")
