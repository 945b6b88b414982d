"""A throwaway PostgreSQL cluster with pgaudit (deploy/postgres/pg.sh) for the real-log tests.

:func:`missing` says why a cluster cannot be started here (the tests skip with that reason);
:class:`PgCluster` starts one under its own CAUSELOG_HOME on a free port, runs SQL through
``psql`` as any role, and rotates the logs so that a finished csvlog/jsonlog pair can be read.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PG_SH = REPO / "deploy" / "postgres" / "pg.sh"


def _server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if os.environ.get("CAUSELOG_PG_BIN"):
        return Path(os.environ["CAUSELOG_PG_BIN"])
    return Path(found[-1]).parent if found else None


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    bin_dir = _server_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        return "PostgreSQL server not installed (bash deploy/postgres/pg.sh install)"
    if not (bin_dir.parent / "lib" / "pgaudit.so").exists():
        return f"pgaudit not installed for {bin_dir.parent.name} (bash deploy/postgres/pg.sh install)"
    if shutil.which("psql") is None:
        return "psql not installed (Debian package postgresql-client)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start the server as user postgres"
    return None


class PgCluster:
    """One cluster started by ``pg.sh start``; :meth:`stop` stops it and deletes its files."""

    def __init__(self, port: int, **settings: str) -> None:
        # Under /tmp and world-traversable: as root the server runs as the `postgres` OS user,
        # which cannot enter pytest's 0700 tmp directories.
        self.home = Path(tempfile.mkdtemp(prefix="causelog-pg-", dir="/tmp"))
        self.home.chmod(0o755)
        self.port = port
        self.env = dict(os.environ, CAUSELOG_HOME=str(self.home), CAUSELOG_PG_PORT=str(port), **settings)
        self.log_dir = self.home / "postgres" / "log"

    def pg_sh(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(PG_SH), command], env=self.env, capture_output=True, text=True,
                              timeout=120)

    def start(self) -> None:
        done = self.pg_sh("start")
        if done.returncode != 0:
            raise RuntimeError(f"pg.sh start failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        self.pg_sh("stop")
        shutil.rmtree(self.home, ignore_errors=True)

    def psql(self, sql: str, *, user: str = "postgres", app: str = "psql", password: str | None = None) -> str:
        """Run ``sql`` (one or more statements, sent one by one as psql does) in one session."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGAPPNAME=app, PGCONNECT_TIMEOUT="10")
        if password is not None:
            env["PGPASSWORD"] = password
        proc = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
             "-U", user, "-d", "postgres", "-f", "-"],
            input=sql, env=env, capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql as {user} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def require_password(self, role: str) -> None:
        """Make the server check ``role``'s password (SCRAM) on its next logins; the role must
        have one (``... PASSWORD '...'``, encrypted with PostgreSQL's default, SCRAM).

        pg.sh's cluster trusts every loopback client; a ``scram-sha-256`` line for the role goes
        before that rule (pg_hba.conf is read top down) and the server reloads the file."""
        hba = self.home / "postgres" / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self.psql("SELECT pg_reload_conf();\n")
        time.sleep(0.3)  # the postmaster reloads on SIGHUP, asynchronously

    def current_logs(self) -> tuple[Path, Path]:
        """The csvlog and jsonlog files the server is writing now."""
        out = self.psql("SELECT pg_current_logfile('csvlog'), pg_current_logfile('jsonlog');").strip()
        csv_path, json_path = out.split("|")
        return Path(csv_path), Path(json_path)

    def wait_for(self, path: Path, text: str, count: int, timeout: float = 15) -> None:
        """Wait until ``text`` occurs ``count`` times in ``path`` (the collector writes asynchronously)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen = path.read_text(errors="replace").count(text)
            if seen >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{path.name}: {seen} times {text!r}, expected {count}")

    def rotate(self) -> tuple[Path, Path]:
        """Switch the server to new log files; return the (now closed) csvlog and jsonlog files.

        File names carry the second, and a rotation within the same second reopens the same
        file, so this rotates until the name changes (one session; pg_current_logfile only
        changes once the old file is closed)."""
        before = self.current_logs()
        self.psql(f"""
            DO $$ BEGIN
              FOR i IN 1..50 LOOP
                PERFORM pg_rotate_logfile();
                PERFORM pg_sleep(0.1);
                EXIT WHEN pg_current_logfile('csvlog') IS DISTINCT FROM '{before[0]}'
                      AND pg_current_logfile('jsonlog') IS DISTINCT FROM '{before[1]}';
              END LOOP;
            END $$;""")
        after = self.current_logs()
        if after[0] == before[0] or after[1] == before[1]:
            raise AssertionError(f"log rotation did not switch files: {before} -> {after}")
        return before
