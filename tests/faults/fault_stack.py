"""A Kafka broker the fault tests may stop and restart (deploy/kafka/kafka.sh on free ports)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

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


class Supervisor:
    """Restarts the stack's worker when it exits with 75 (EX_TEMPFAIL), like systemd's
    ``Restart=on-failure`` would; any other exit code is recorded as a failure."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.restarts = 0
        self.bad_exits: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for proc in list(self.stack.workers):
                code = proc.poll()
                if code is None:
                    continue
                self.stack.workers.remove(proc)
                if code != 75:
                    self.bad_exits.append(code)
                    continue
                self.restarts += 1
                self.stack.start_worker()
