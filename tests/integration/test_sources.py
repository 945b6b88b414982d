"""Source runner on a real broker: transactional cursor, kill -9 mid-backfill, DLQ for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka_stack import Stack, header

from pipeline.model import decode

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TEMPLATE = DATA / "config" / "falco-k8s-audit" / "create_configmap.json"


def _audit_log(path: Path, n: int, bad_every: int = 0) -> list[str]:
    """A Kubernetes audit log of ``n`` distinct events (ids), some bad lines when asked."""
    if not TEMPLATE.exists():
        pytest.skip(f"real sample data not found at {DATA}")
    base = orjson.loads(TEMPLATE.read_bytes())
    ids = []
    with path.open("wb") as fh:
        for i in range(n):
            if bad_every and i % bad_every == bad_every - 1:
                fh.write(b'{"kind": "Event", "auditID": \n')
                continue
            ev = dict(base, auditID=f"00000000-0000-0000-0000-{i:012d}")
            ev["objectRef"] = dict(base["objectRef"], name=f"cfg-{i}")
            fh.write(orjson.dumps(ev) + b"\n")
            ids.append(ev["auditID"])
    return ids


def test_killed_mid_backfill_resumes_with_nothing_missing_or_twice(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    audit_ids = _audit_log(log, 20_000)
    cmd = [sys.executable, "-m", "pipeline.cli.main", "ingest", "k8s-audit", "--file", str(log)]
    proc = subprocess.Popen(cmd, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it once some chunks are committed but long before the end.
    deadline = time.monotonic() + 60
    while True:
        seen = _committed_count(stack)
        if seen >= 2_000:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no committed output"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _committed_count(stack) < 20_000, "the source finished before it was killed; test proves nothing"

    again = stack.cli("ingest", "k8s-audit", "--file", str(log))
    assert again.returncode == 0, again.stderr
    msgs = stack.read_topic(stack.settings.topic_changes, expected=20_000, timeout=60)
    events = [decode(m.value()) for m in msgs]
    assert len(events) == 20_000, f"{len(events)} events in Kafka"
    raw_ids = Counter(e.raw["auditID"] for e in events)  # type: ignore[index]
    assert set(raw_ids) == set(audit_ids) and max(raw_ids.values()) == 1

    # A third run finds nothing new.
    third = stack.cli("ingest", "k8s-audit", "--file", str(log))
    assert third.returncode == 0 and "0 records" in third.stderr


def _committed_count(stack: Stack) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "probe",
                  "isolation.level": "read_committed"})
    try:
        md = c.list_topics(stack.settings.topic_changes, timeout=10)
        total = 0
        for p in md.topics[stack.settings.topic_changes].partitions:
            # With read_committed the high watermark reported is the last stable offset.
            low, high = c.get_watermark_offsets(TopicPartition(stack.settings.topic_changes, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def test_bad_lines_go_to_the_dlq_with_reason_and_the_source_goes_on(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    ids = _audit_log(log, 1_000, bad_every=100)
    result = stack.cli("ingest", "k8s-audit", "--file", str(log))
    assert result.returncode == 1  # some input was rejected
    assert "990 events" in result.stderr and "10 rejected" in result.stderr
    dlq = stack.read_topic(stack.settings.topic_dlq, expected=10, timeout=30)
    assert len(dlq) == 10
    assert {header(m, "reason") for m in dlq} == {"bad_json"}
    assert all(header(m, "origin").startswith(f"k8s-audit:{log}:") for m in dlq)
    assert len(stack.read_topic(stack.settings.topic_changes, expected=990, timeout=30)) == len(ids)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # otrf-security-datasets: a JSON delivery (103 records) and a CSV export (301 rows).
        (["cloudtrail", "iam/stratus-red-team-detonation-logs", "iam/otrf-security-datasets"], 310 + 103 + 301),
        (["github-webhook", "--file", "git/octokit-webhooks"], 153),
        (["github-audit", "iam/elastic-integrations-github-audit/test-organisation-audit-json.excerpt.log"], 71),
        (["postgres-log", "--server", "pg1", "database/pgbadger-fixtures/csv_statement_without_duration.log"], 2),
        # Directories, walked recursively, for every file source (pretty-printed documents and JSON lines).
        (["k8s-audit", "--file", "config/falco-k8s-audit"], 51),
        (["okta", "iam/elastic-integrations-okta-system"], 9),
        (["github-audit", "iam/elastic-integrations-github-audit"], 71),
    ],
    ids=["cloudtrail", "github-webhook", "github-audit", "postgres-log", "k8s-audit-dir", "okta-dir",
         "github-audit-dir"],
)
def test_real_sample_data_ingests_once(stack: Stack, args: list[str], expected: int) -> None:
    if not DATA.exists():
        pytest.skip(f"real sample data not found at {DATA}")
    argv = [a if a.startswith("-") or "/" not in a else str(DATA / a) for a in args]
    first = stack.cli("ingest", *argv)
    assert first.returncode == 0, first.stderr
    assert f"-> {expected:,} events" in first.stderr
    again = stack.cli("ingest", *argv)
    assert again.returncode == 0 and "0 records -> 0 events" in again.stderr
    msgs = stack.read_topic(stack.settings.topic_changes, expected=expected, timeout=30)
    assert len(msgs) == expected
    # Two of Falco's trace files repeat another's audit record (same auditID, so the same event id).
    repeated = 2 if args[0] == "k8s-audit" else 0
    assert len({decode(m.value()).id for m in msgs}) == expected - repeated
