"""README walked as a user on a real stack (`causelog up` on the shared broker, the embedded store
behind the worker API), with the settings a user has: the defaults, not the test harness's raised
CAUSELOG_QUERY_MAX_ROWS. Each step failed before its fix:

- `causelog rules hunt RULES --since T` asked the worker for 1,000,000 rows by default, above the
  default CAUSELOG_QUERY_MAX_ROWS (100,000): refused, so the README's example never ran;
- `causelog evidence` of an event failed once `causelog prune` had removed other rows of its log
  ("rows of the checkpointed tree are missing"), although the signed pruned record keeps their leaves;
- `causelog verify --log N` of a log that does not exist answered 500 (a traceback in the worker);
- `POST /v1/sql {"limit": 0}` answered the default number of rows instead of refusing the limit;
- `causelog up` with a CAUSELOG_API already served by another deployment's worker said "causelog is
  up" (its own worker had died on the busy port) and started a rules runner, and `status` showed
  the other deployment's worker as up;
- `causelog produce` to an unreachable broker retried for two minutes, printing a librdkafka line
  every 50 ms, before its error.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from kafka_stack import Stack

pytestmark = pytest.mark.integration

SAMPLE = "deploy/sample/changes.jsonl"
DEPLOY = "c18397a902cda2c40af42d23cac36f1e"  # deploy.succeeded of the sample


def _user_defaults(stack: Stack) -> None:
    from pipeline.settings import load

    stack.env.pop("CAUSELOG_QUERY_MAX_ROWS", None)
    stack.settings = load(stack.env)
    assert stack.settings.query_max_rows == 100_000


def _evidence_when_signed(stack: Stack, out: Path, timeout: float = 60) -> None:
    """`causelog evidence` once a signed checkpoint covers the event (signing runs every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        made = stack.cli("evidence", DEPLOY, "--out", str(out))
        if made.returncode == 0 or time.monotonic() > deadline or "no signed checkpoint" not in made.stderr:
            break
        time.sleep(1)
    assert made.returncode == 0, made.stderr


def test_readme_walk_with_default_settings(stack: Stack, kafka_bootstrap: str, tmp_path: Path) -> None:
    _user_defaults(stack)
    stack.cli("up", "--detach", check=True)
    try:
        # A second deployment given the same CAUSELOG_API: its worker cannot listen there. `up`
        # used to take the first deployment's /health for its own and report success.
        other = Stack(kafka_bootstrap, tmp_path / "other", CAUSELOG_API=stack.env["CAUSELOG_API"])
        try:
            clash = other.cli("up", "--detach")
        finally:
            other.cli("down")  # whatever it started (before the fix: a rules runner)
        assert clash.returncode == 2 and "Traceback" not in clash.stderr, clash.stderr
        assert f"{stack.settings.api_url} (CAUSELOG_API) is already served by another process" in clash.stderr
        assert not (other.settings.run_dir / "rules.pid").exists()
        # ... and `status` does not report the first deployment's worker as its own.
        mixed = other.cli("status", "--json")
        assert mixed.returncode == 1
        assert f"is of group {stack.settings.group}" in orjson.loads(mixed.stdout)["worker_error"]

        stack.cli("produce", SAMPLE, "--wait", "60", check=True)

        # rules hunt with its default --limit, and a --limit that cuts the window says so.
        rules = tmp_path / "rules.yml"
        rules.write_text("title: any deploy\nid: 0f8e5c1c-2a8b-4f51-9d3e-6a1b2c3d4e5f\nlogsource: {product: causelog}\n"
                         "detection:\n  sel:\n    type|startswith: deploy.\n  condition: sel\nlevel: low\n")
        hunt = stack.cli("rules", "hunt", str(rules), "--since", "2026-11-01", "--json", check=True)
        alerted = [a["event_ids"][0] for a in orjson.loads(hunt.stdout)]
        assert len(alerted) == 2 and DEPLOY in alerted  # deploy.created and deploy.succeeded
        assert "11 stored events" in hunt.stderr
        cut = stack.cli("rules", "hunt", str(rules), "--since", "2026-11-01", "--limit", "3", check=True)
        assert "3 stored events" in cut.stderr and "read only the first 3 stored events" in cut.stderr

        # A limit of 0 is out of range, not "the default".
        req = urllib.request.Request(f"{stack.settings.api_url}/v1/sql", method="POST",
                                     data=orjson.dumps({"sql": "SELECT 1", "limit": 0}),
                                     headers={"Authorization": f"Bearer {stack.settings.admin_token_path.read_text().strip()}",
                                              "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 400 and b"limit 0 is outside" in refused.value.read()

        # Retention removes the sample's db.query; the deploy of the same log still has its proof.
        _evidence_when_signed(stack, tmp_path / "before")
        (stack.home / "retention.yaml").write_text("retention:\n  db.query: 1d\n")
        pruned = stack.cli("prune", check=True)
        assert "removed 1 events" in pruned.stdout + pruned.stderr
        stack.cli("evidence", DEPLOY, "--out", str(tmp_path / "after"), check=True)
        checked = stack.cli("verify-pack", str(tmp_path / "after"), check=True)
        assert checked.stdout.startswith("ok: 1 event(s) proven")
        verified = stack.cli("verify", check=True)
        assert "1 pruned by retention" in verified.stdout

        # An unknown log is a one-line error naming the logs there are.
        unknown = stack.cli("verify", "--log", "99")
        assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
        assert len(unknown.stderr.splitlines()) == 1 and "no log 99 in the store" in unknown.stderr
    finally:
        stack.cli("down")


def test_produce_to_an_unreachable_broker_fails_fast_in_one_line(tmp_path: Path) -> None:
    """It used to retry for two minutes, printing a librdkafka line every 50 ms, before its error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAUSELOG_", "KAFKA_", "CLICKHOUSE_"))}
    env |= {"CAUSELOG_HOME": str(tmp_path), "KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "produce", SAMPLE], env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2 and time.monotonic() - started < 45, proc.stderr[-500:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr[-500:]
    assert proc.stderr.startswith(f"error: Kafka at 127.0.0.1:{closed} did not answer within 15s")


def test_query_commands_default_limits_stay_within_a_lowered_row_cap(stack: Stack) -> None:
    """An operator lowering CAUSELOG_QUERY_MAX_ROWS broke `sql` (default --limit 10000) and
    `timeline`/`who`/`session`/`trace` (1000): the worker refused the CLI's own default."""
    from pipeline.settings import load

    stack.env["CAUSELOG_QUERY_MAX_ROWS"] = "500"
    stack.settings = load(stack.env)
    stack.start_worker()
    for args in (("sql", "SELECT number FROM numbers(600)"), ("timeline", "--since", "30d"), ("who", "erin"),
                 ("session", "6560a1b2.3f1"), ("trace", "4bf92f3577b34da6a3ce929d0e0e4736")):
        done = stack.cli(*args, "--json")
        assert done.returncode == 0, (args, done.stderr)
        orjson.loads(done.stdout)
    cut = stack.cli("sql", "SELECT number FROM numbers(600)", "--json", check=True)
    assert len(orjson.loads(cut.stdout)) == 500 and "more rows exist" in cut.stderr
    over = stack.cli("timeline", "--since", "30d", "--limit", "501")
    assert over.returncode == 2 and "limit 501 is outside 1..500" in over.stderr
