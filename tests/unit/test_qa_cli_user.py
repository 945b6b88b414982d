"""The CLI as a user runs it (a real process, a fresh CAUSELOG_HOME, stderr a pipe): wrong input
gets one clear line and exit code 2, never a traceback; and the README's own examples run.

Each case here was found failing by walking README.md in a fresh environment; none needs a broker.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def causelog(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``causelog ARGS`` in its own process, settings from a clean environment."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CAUSELOG_", "KAFKA_", "CLICKHOUSE_"))}
    environ |= {"CAUSELOG_HOME": str(home), "CAUSELOG_API": f"127.0.0.1:{_closed_port()}",
                "KAFKA_BOOTSTRAP": f"127.0.0.1:{_closed_port()}", "COLUMNS": "80", **env}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=environ, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The error of a refused command: exit code 2, no traceback; returns stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("args, says", [
    (("produce", "no-such-file.jsonl"), "File 'no-such-file.jsonl' does not exist"),
    (("worker", "--loglevel", "loud"), "'loud' is not one of 'debug', 'info'"),
    (("sql", "SELECT 1", "--limit", "0"), "0 is not in the range x>=1"),
])
def test_bad_arguments_are_refused_without_a_traceback(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    assert says in refused(causelog(tmp_path, *args))


def test_an_error_is_one_line_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    # Longer than rich's 80 columns: it used to be wrapped over two lines in logs and pipes.
    err = refused(causelog(tmp_path, "timeline"))
    assert len(err.splitlines()) == 1 and len(err) > 100, err
    assert err.startswith("error: the worker API at http://127.0.0.1:") and "causelog up" in err


def test_postgres_log_directory_without_matching_files_says_so(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    (logs / "postgresql-Mon.log").write_text("2026-11-27 02:14:00 UTC [42] LOG:  database system is ready\n")
    err = refused(causelog(tmp_path, "ingest", "postgres-log", "--server", "pg1", str(logs)))
    assert len(err.splitlines()) == 1, err
    assert "no file matches '*.csv'" in err and "--glob" in err


def test_the_readme_rule_examples_validate(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(title: Deploy of a commit whose chain.*?)```", readme, re.S)
    assert block, "README's causelog rules example is gone"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "readme.yml").write_text(block.group(1))
    proc = causelog(tmp_path, "rules", "validate", str(rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "; 0 bad" in proc.stderr


def test_an_unreachable_clickhouse_server_is_one_error_line(tmp_path: Path) -> None:
    # clickhouse-connect's own log line ("Unexpected Http Driver Exception") came first.
    err = refused(causelog(tmp_path, "sql", "SELECT 1", CLICKHOUSE_URL=f"http://127.0.0.1:{_closed_port()}"))
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot open ClickHouse"), err


def test_rules_test_runs_the_builtin_pack_alone_and_needs_some_rules(tmp_path: Path) -> None:
    trail = tmp_path / "trail.json"
    trail.write_text('{"Records": [{"eventVersion": "1.08", "eventSource": "cloudtrail.amazonaws.com", '
                     '"eventName": "StopLogging", "eventTime": "2026-11-27T02:00:00Z", "awsRegion": "eu-west-1", '
                     '"eventID": "e-1", "requestParameters": {"name": "arn:aws:cloudtrail:eu-west-1:1:trail/main"}, '
                     '"userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/mallory", '
                     '"accountId": "1", "userName": "mallory"}, "sourceIPAddress": "203.0.113.9"}]}')
    proc = causelog(tmp_path, "rules", "test", "--builtin", "--on", str(trail), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Audit logging disabled" in proc.stdout, proc.stdout
    assert "give rule files or directories" in refused(causelog(tmp_path, "rules", "test", "--on", str(trail)))
