"""`causelog ingest config DIR` on a real broker: diffs with secrets redacted, DLQ, kill -9 mid-backfill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafka_stack import Stack, header
from keyed_helpers import marker as keyed_marker

from pipeline.model import Event, decode

pytestmark = pytest.mark.integration

# Registers the command the way the CLI does (harmless once pipeline/cli/ingest.py registers it).
_ENTRY = (
    "from pipeline.cli.main import main; from pipeline.cli.ingest import ingest; "
    "from pipeline.cli.ingest_config import config; ingest.add_command(config); main()"
)
SECRET = "s3cr3t-Pa55word-do-not-leak"
NEW_SECRET = "an0ther-Pa55word-do-not-leak"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", _ENTRY, "ingest", "config", *args]


def _ingest(stack: Stack, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(str(directory)), env=stack.env, capture_output=True, text=True, timeout=120)


def _events(stack: Stack, expected: int) -> tuple[list[Event], bytes]:
    """The events on the changes topic (read_committed) and all their bytes, for leak checks."""
    msgs = stack.read_topic(stack.settings.topic_changes, expected, timeout=30)
    return [decode(m.value()) for m in msgs], b"\n".join(m.value() for m in msgs)


def test_config_changes_with_secret_redacted_and_bad_file_to_dlq(stack: Stack, tmp_path: Path) -> None:
    d = tmp_path / "conf"
    (d / "svc").mkdir(parents=True)
    (d / "app.yaml").write_text(f"db:\n  host: db1\n  port: 5432\n  password: {SECRET}\nreplicas: 2\n")
    (d / "svc" / "feature.json").write_text('{"flags": {"beta": false}, "limit": 10}')
    (d / "pyproject.toml").write_text('[tool.x]\nlevel = "info"\n')
    (d / "my.ini").write_text("[server]\nport = 8080\n")
    (d / ".env").write_text(f"export MODE=prod\nDB_PASSWORD={SECRET}\n")
    (d / "app.properties").write_text("cache.size=100\n")

    first = _ingest(stack, d)
    assert first.returncode == 0, first.stderr
    assert "6 records -> 6 events" in first.stderr
    events, wire = _events(stack, 6)
    assert len(events) == 6
    by_path = {e.subject: e for e in events}
    assert set(by_path) == {"app.yaml", "svc/feature.json", "pyproject.toml", "my.ini", ".env", "app.properties"}
    assert all(e.type == "config.changed" and e.action == "create" for e in events)
    assert all(e.actor.assurance == "claimed" and e.actor.principal.startswith("os:") for e in events)
    assert by_path["app.yaml"].diff["changed"] == ["db.host", "db.password", "db.port", "replicas"]  # type: ignore[index]
    marker = by_path["app.yaml"].diff["after"]["db.password"]  # type: ignore[index]
    # hashed by the CLI with the deployment key CAUSELOG_HASH_KEY_FILE names (tests/conftest.py)
    assert marker == keyed_marker(SECRET)
    assert by_path[".env"].diff["after"]["DB_PASSWORD"] == marker  # type: ignore[index]
    assert by_path["svc/feature.json"].target.id == "conf/svc/feature.json"
    assert SECRET.encode() not in wire  # not in the diff, not in raw

    again = _ingest(stack, d)
    assert again.returncode == 0 and "0 records -> 0 events" in again.stderr

    # Edit two files, one of them changing the secret.
    (d / "app.yaml").write_text(f"db:\n  host: db1\n  port: 5432\n  password: {NEW_SECRET}\nreplicas: 3\n")
    (d / "my.ini").write_text("[server]\nport = 9090\n")
    second = _ingest(stack, d)
    assert second.returncode == 0, second.stderr
    assert "2 records -> 2 events" in second.stderr
    events, wire = _events(stack, 8)
    new = [e for e in events if e.action == "update"]
    assert len(new) == 2
    upd = {e.subject: e for e in new}
    assert upd["app.yaml"].diff["changed"] == ["db.password", "replicas"]  # type: ignore[index]
    assert upd["app.yaml"].diff["before"]["db.password"] == marker  # type: ignore[index]
    assert upd["app.yaml"].diff["after"]["db.password"] == keyed_marker(NEW_SECRET)  # type: ignore[index]
    assert upd["app.yaml"].diff["after"]["db.password"] != marker  # type: ignore[index]
    assert upd["my.ini"].diff == {"changed": ["server.port"], "before": {"server.port": "8080"},
                                  "after": {"server.port": "9090"}}  # fmt: skip
    assert NEW_SECRET.encode() not in wire

    # An unparseable file: a DLQ record with the reason; the other change still goes out.
    (d / "broken.yaml").write_text(f"key: [unclosed\npassword: {SECRET}\n")
    (d / "app.properties").write_text("cache.size=200\n")
    third = _ingest(stack, d)
    assert third.returncode == 1  # something was rejected
    assert "2 records -> 1 events" in third.stderr and "1 rejected" in third.stderr
    dlq = stack.read_topic(stack.settings.topic_dlq, expected=1, timeout=30)
    assert len(dlq) == 1
    assert header(dlq[0], "reason") == "bad_config"
    assert "broken.yaml" in (header(dlq[0], "error") or "") and "line" in (header(dlq[0], "error") or "")
    assert SECRET.encode() not in (dlq[0].value() or b"") + str(dlq[0].headers()).encode()
    events, wire = _events(stack, 9)
    assert len(events) == 9 and SECRET.encode() not in wire and NEW_SECRET.encode() not in wire
    # Not retried while unchanged.
    fourth = _ingest(stack, d)
    assert fourth.returncode == 0 and "0 records" in fourth.stderr
    # The cursor (the files' "before" state, kept in Kafka) holds no secret either.
    cursors = b"\n".join(m.value() for m in stack.read_topic(stack.settings.topic_cursors, expected=1, timeout=10))
    assert b'"files"' in cursors and SECRET.encode() not in cursors and NEW_SECRET.encode() not in cursors


def _committed_count(stack: Stack) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": "probe",
                  "isolation.level": "read_committed"})  # fmt: skip
    try:
        topic = stack.settings.topic_changes
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def _make_tree(d: Path, n: int, keys: int) -> set[str]:
    ids = set()
    exts = ("yaml", "json", "toml", "ini", "env", "properties")
    for i in range(n):
        sub = d / f"team{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        ext = exts[i % len(exts)]
        name = f"svc{i:05d}.{ext}"
        pairs = [(f"key_{k}", f"value-{i}-{k}") for k in range(keys)]
        body: Any
        if ext == "yaml":
            body = "\n".join(f"{k}: {v}" for k, v in pairs)
        elif ext == "json":
            body = "{" + ", ".join(f'"{k}": "{v}"' for k, v in pairs) + "}"
        elif ext == "toml" or ext == "ini":
            body = ("[main]\n" if ext == "ini" else "") + "\n".join(f'{k} = "{v}"' for k, v in pairs)
        else:
            body = "\n".join(f"{k}={v}" for k, v in pairs)
        (sub / name).write_text(body + "\n")
        ids.add(f"{d.name}/{sub.name}/{name}")
    return ids


def test_killed_mid_backfill_resumes_with_nothing_missing_or_twice(stack: Stack, tmp_path: Path) -> None:
    d = tmp_path / "many"
    n = 3000
    expected_ids = _make_tree(d, n, keys=40)
    proc = subprocess.Popen(_cmd(str(d)), env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        seen = _committed_count(stack)
        if seen >= 300:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no committed output"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _committed_count(stack) < n, "the source finished before it was killed; test proves nothing"

    again = _ingest(stack, d)
    assert again.returncode == 0, again.stderr
    events, _ = _events(stack, n)
    targets = Counter(e.target.id for e in events)
    assert len(events) == n, f"{len(events)} events in Kafka"
    assert set(targets) == expected_ids and max(targets.values()) == 1
    assert len({e.id for e in events}) == n
    assert sorted(e.source_seq for e in events) == list(range(1, n + 1))  # type: ignore[type-var]

    third = _ingest(stack, d)
    assert third.returncode == 0 and "0 records -> 0 events" in third.stderr
