"""The isolated causelog deployment used by integration tests (a real Kafka broker; see conftest).

With ``KAFKA_BOOTSTRAP`` set, that cluster is used and nothing is started. Every test gets its
own topic prefix, consumer group, API port and CAUSELOG_HOME (so its own chDB store).

The fixtures ``kafka_bootstrap`` and ``stack`` live here so that every suite needing a running
worker (tests/integration, tests/security) shares them: each suite's conftest imports them, and
the broker is started once per test session whichever suite asks first.

The worker creates its admin token in the stack's CAUSELOG_HOME on start; the CLI and
:meth:`Stack.sql` send it from there, as `causelog up` users' CLI does. Query audit events
(``causelog.query``) are off by default here because many tests count stored events exactly;
tests/security turns them on.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """One isolated causelog deployment on the shared broker: topics, group, store, API."""

    def __init__(self, bootstrap: str, home: Path, **extra: str) -> None:
        tag = uuid.uuid4().hex[:10]
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.env = dict(
            os.environ,
            KAFKA_BOOTSTRAP=bootstrap,
            CAUSELOG_HOME=str(home),
            CAUSELOG_TOPIC_PREFIX=f"t{tag}",
            CAUSELOG_GROUP=f"g{tag}",
            CAUSELOG_API=f"127.0.0.1:{free_port()}",
            CAUSELOG_PARTITIONS="4",
            CAUSELOG_BATCH_WITHIN="0.2",
            CAUSELOG_AUDIT_QUERIES="0",
            # Tests read whole tables back to compare them.
            CAUSELOG_QUERY_MAX_ROWS="10000000",
        )
        self.env.pop("CAUSELOG_TOKEN", None)
        self.env.pop("CLICKHOUSE_URL", None)
        self.env.update(extra)
        from pipeline.settings import load

        self.settings = load(self.env)
        self.workers: list[subprocess.Popen[bytes]] = []

    # -- processes ---------------------------------------------------------------------------
    def cli(self, *args: str, input: bytes | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=self.env,
                              input=input.decode() if input is not None else None, capture_output=True, text=True,
                              timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"causelog {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start_worker(self, timeout: float = 90) -> subprocess.Popen[bytes]:
        log = (self.home / f"worker{len(self.workers)}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "worker", "--loglevel", "warning"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{self.log_tail()}")
            if self.health():
                return proc
            time.sleep(0.2)
        raise AssertionError(f"worker not healthy after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        text = ""
        for p in sorted(self.home.glob("worker*.log")):
            text += f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-n:]) + "\n"
        return text

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(sig)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers = []

    # -- API ---------------------------------------------------------------------------------
    def health(self) -> dict[str, Any] | None:
        from pipeline.cli import api

        return api.healthy(self.settings, timeout=1.0)

    def stats(self) -> dict[str, Any]:
        from pipeline.cli import api

        return api.call(self.settings, "/v1/stats")

    def sql(self, query: str) -> list[list[Any]]:
        from pipeline.cli import api

        return api.call(self.settings, "/v1/sql", {"sql": query.replace("DB.", self.settings.database + "."),
                                                   "limit": self.settings.query_max_rows})["rows"]

    def wait_rows(self, expected: int, timeout: float = 180) -> int:
        """Wait until the events table holds ``expected`` rows (or fail with the count seen)."""
        deadline = time.monotonic() + timeout
        n = -1
        while time.monotonic() < deadline:
            n = self.sql("SELECT count() FROM DB.events")[0][0]
            if n >= expected:
                return n
            time.sleep(0.5)
        raise AssertionError(f"{n} rows stored, expected {expected}\n{self.log_tail()}")

    def wait_records(self, expected: int, timeout: float = 180) -> dict[str, Any]:
        """Wait until the worker has processed ``expected`` records (stored + rejected + dupes)."""
        deadline = time.monotonic() + timeout
        c: dict[str, Any] = {}
        while time.monotonic() < deadline:
            c = self.stats()["worker"]
            if c["records"] >= expected:
                return c
            time.sleep(0.3)
        raise AssertionError(f"worker counters {c}, expected {expected} records\n{self.log_tail()}")

    # -- Kafka -------------------------------------------------------------------------------
    def ensure_topics(self) -> None:
        from pipeline.bus import ensure_topics

        ensure_topics(self.settings)

    def produce(self, values: list[bytes], key: bytes = b"acme") -> None:
        p = Producer({"bootstrap.servers": self.settings.kafka_bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 20, "message.max.bytes": 4 * 1024 * 1024})
        errors: list[str] = []
        for i, v in enumerate(values):
            while True:
                try:
                    p.produce(self.settings.topic_changes, v, key=key if key else str(i).encode(),
                              on_delivery=lambda e, m: errors.append(str(e)) if e else None)
                    break
                except BufferError:
                    p.poll(0.1)
        assert p.flush(60) == 0
        assert not errors, errors[:3]

    def read_topic(self, topic: str, expected: int, timeout: float = 60) -> list[Any]:
        c = Consumer({"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "isolation.level": "read_committed"})
        c.subscribe([topic])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        idle_until = None
        try:
            while time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    # After reaching the expected count, wait a little longer to catch extras.
                    if len(out) >= expected:
                        idle_until = idle_until or time.monotonic() + 3
                        if time.monotonic() > idle_until:
                            break
                    continue
                if m.error():
                    continue
                out.append(m)
        finally:
            c.close()
        return out


def header(msg: Any, name: str) -> str | None:
    for k, v in msg.headers() or []:
        if k == name:
            return v.decode()
    return None


def json_rows(stdout: str) -> list[dict[str, Any]]:
    return orjson.loads(stdout)


# -- fixtures (imported by the conftest of each suite that needs a running worker) -------------

_BROKER: dict[str, str] = {}


def _start_broker(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Start the session's broker once, whichever suite asks first; stopped when the session ends."""
    if "bootstrap" in _BROKER:
        return _BROKER["bootstrap"]
    home = tmp_path_factory.mktemp("kafka-home")
    env = dict(os.environ, CAUSELOG_HOME=str(home), CAUSELOG_KAFKA_PORT=str(free_port()),
               CAUSELOG_KAFKA_CONTROLLER_PORT=str(free_port()), PYTHON=sys.executable)
    started = subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"could not start Kafka:\n{started.stdout}\n{started.stderr}")
    atexit.register(subprocess.run, ["bash", str(KAFKA_SH), "stop"], env=env, capture_output=True)
    _BROKER["bootstrap"] = f"127.0.0.1:{env['CAUSELOG_KAFKA_PORT']}"
    return _BROKER["bootstrap"]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Bootstrap servers of the test broker: ``KAFKA_BOOTSTRAP``, or one started for the session."""
    return os.environ.get("KAFKA_BOOTSTRAP") or _start_broker(tmp_path_factory)


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stack]:
    """An isolated deployment on the test broker; its workers are killed when the test ends."""
    s = Stack(kafka_bootstrap, tmp_path)
    s.ensure_topics()
    try:
        yield s
    finally:
        s.stop_workers(signal.SIGKILL)
        # What `causelog up --detach` started (worker, rules runner) outlives a failed test otherwise.
        from pipeline.cli import stack as local

        for pid in (local.worker_pid(s.settings), local.rules_pid(s.settings)):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
