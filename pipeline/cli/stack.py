"""Local stack processes: the single-node broker (deploy/kafka/kafka.sh), the worker and the rules runner."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cli import api
from pipeline.errors import BusError, CauselogError
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["CAUSELOG_HOME"] = str(settings.home)
    env.setdefault("PYTHON", sys.executable)
    return env


def kafka(settings: Settings, action: str, *, check: bool = True) -> int:
    """Run ``deploy/kafka/kafka.sh ACTION`` for the local broker; nothing when KAFKA_BOOTSTRAP is set."""
    if settings.kafka_external:
        return 0
    if not KAFKA_SH.exists():
        raise CauselogError(f"{KAFKA_SH} not found: the local broker needs a causelog checkout")
    proc = subprocess.run(["bash", str(KAFKA_SH), action], env=_env(settings))
    if check and proc.returncode != 0:
        raise BusError(f"`kafka.sh {action}` failed with exit code {proc.returncode} (see output above)")
    return proc.returncode


def _pidfile(settings: Settings) -> Path:
    return settings.run_dir / "worker.pid"


def worker_log(settings: Settings) -> Path:
    """Where a detached worker writes its log."""
    return settings.run_dir / "worker.log"


def worker_pid(settings: Settings) -> int | None:
    """Pid of the running worker started by ``causelog up``, or None."""
    return _live_pid(_pidfile(settings))


def _live_pid(pidfile: Path, *, reap: bool = False) -> int | None:
    """The pid in ``pidfile`` if that process is alive (``reap``: collect it first if it is our
    exited child, so a dead runner does not look alive as a zombie)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if reap:
        _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def start_worker(settings: Settings, *, timeout: float = 120.0) -> int:
    """Start the worker in the background and wait until its API answers; return its pid.

    Only an answer from this very worker counts (``/health`` names its pid): another process on
    CAUSELOG_API (another deployment's worker) is an error, not a started stack."""
    pid = worker_pid(settings)
    answering = api.health(settings)
    if answering is not None:
        if pid is not None and answering.get("pid") == pid:
            return pid
        raise CauselogError(
            f"{settings.api_url} (CAUSELOG_API) is already served by another process (pid {answering.get('pid')}, "
            f"store {answering.get('store')}, group {answering.get('group')}): set CAUSELOG_API to a free HOST:PORT")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = worker_log(settings).open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "worker"],
        env=_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pidfile(settings).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CauselogError(f"the worker exited with code {proc.returncode}:\n{tail(worker_log(settings))}")
        if (h := api.healthy(settings, timeout=1.0)) is not None and h.get("pid") == proc.pid:
            return proc.pid
        time.sleep(0.3)
    raise CauselogError(f"the worker did not answer on {settings.api_url} within {timeout:.0f}s:\n{tail(worker_log(settings))}")


def stop_worker(settings: Settings, *, timeout: float = 30.0) -> bool:
    """SIGTERM the worker (it commits what it stored and exits), SIGKILL after ``timeout``."""
    pid = worker_pid(settings)
    if pid is None:
        _pidfile(settings).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    _pidfile(settings).unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # A worker started by this very process stays a zombie (and "alive" to kill 0) until reaped.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


# ------------------------------------------------------------------------------- rules runner
# `causelog up` starts `causelog rules run` next to the worker (DESIGN.md §1), detached, with its
# own pid file and log; `causelog status` reports it and fails when a runner it started died.

RULES_READY = "rules runner ready"


def rules_log(settings: Settings) -> Path:
    """Where the rules runner started by ``causelog up`` writes its log."""
    return settings.run_dir / "rules.log"


def _rules_pidfile(settings: Settings) -> Path:
    return settings.run_dir / "rules.pid"


def rules_started(settings: Settings) -> bool:
    """Whether ``causelog up`` started a rules runner that ``causelog down`` has not stopped."""
    return _rules_pidfile(settings).exists()


def rules_pid(settings: Settings) -> int | None:
    """Pid of the live rules runner started by ``causelog up``, or None (never started, or died)."""
    return _live_pid(_rules_pidfile(settings), reap=True)


def start_rules(settings: Settings, *, timeout: float = 120.0) -> int:
    """Start ``causelog rules run`` in the background; return its pid once it consumes (it says
    so in its log), or raise ``CauselogError`` with the log's tail if it exits first."""
    if (pid := rules_pid(settings)) is not None:
        return pid
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = rules_log(settings)
    start = path.stat().st_size if path.exists() else 0
    with path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "rules", "run"],
            env=_env(settings), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _rules_pidfile(settings).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CauselogError(f"the rules runner exited with code {proc.returncode}:\n{tail(path)}")
        with path.open("rb") as f:
            f.seek(start)
            if RULES_READY.encode() in f.read():
                return proc.pid
        time.sleep(0.3)
    raise CauselogError(f"the rules runner did not start consuming within {timeout:.0f}s:\n{tail(path)}")


def stop_rules(settings: Settings, *, timeout: float = 30.0) -> bool:
    """SIGTERM the rules runner (it finishes its transaction and exits), SIGKILL after
    ``timeout``; forget it either way. True if one was running."""
    pid = rules_pid(settings)
    _rules_pidfile(settings).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return True
