"""``causelog worker`` while another process holds the same embedded store: one line naming the
store path, the other process and CAUSELOG_HOME, a non-zero exit, and not chDB's raw
"Cannot lock file" complaint (found by a QA walk)."""

from __future__ import annotations

import subprocess
import sys

from kafka_stack import Stack

HOLD = ("import clickhouse_connect, sys, time\n"
        "c = clickhouse_connect.get_client(interface='chdb', path=sys.argv[1])\n"
        "c.command('SELECT 1')\nprint('open', flush=True)\ntime.sleep(120)\n")


def test_second_worker_on_the_same_store_says_who_holds_it(stack: Stack) -> None:
    path = stack.settings.chdb_path
    path.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "worker"], env=stack.env,
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert f"{path} is already in use by another causelog worker (or process, pid {holder.pid})" in errors[0], out
    assert f"CAUSELOG_HOME (now {stack.home})" in errors[0], out
    assert "Cannot lock" not in out and "Traceback" not in out, out
