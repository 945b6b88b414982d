"""`causelog ingest` as a user runs it on files a QA walk found misread: pgaudit's regression
transcript (read as a stderr log: 0 events, exit 0) and OTRF's CloudTrail CSV export (sent whole
to the DLQ as bad_json; skipped without a word inside a folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka_stack import Stack

from pipeline.model import decode
from pipeline.rules.offline import read_events

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PGAUDIT = DATA / "database" / "pgaudit-regression" / "pgaudit.out"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real sample data not found at {path}")


def test_pgaudit_transcript_is_read_like_rules_test_reads_it(stack: Stack) -> None:
    _need(PGAUDIT)
    first = stack.cli("ingest", "postgres-log", "--server", "regress", str(PGAUDIT))
    assert first.returncode == 0, first.stderr
    assert "postgres-log: 415 records -> 415 events" in first.stderr, first.stderr
    assert "orphan_lines" not in first.stderr, first.stderr
    again = stack.cli("ingest", "postgres-log", "--server", "regress", str(PGAUDIT))
    assert again.returncode == 0 and "0 records -> 0 events" in again.stderr, again.stderr
    assert len(stack.read_topic(stack.settings.topic_changes, expected=415, timeout=30)) == 415


def test_a_log_of_which_nothing_is_readable_fails_in_one_line(stack: Stack) -> None:
    _need(PGAUDIT)
    done = stack.cli("ingest", "postgres-log", "--server", "regress", "--format", "stderr", str(PGAUDIT))
    assert done.returncode != 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {PGAUDIT}: no PostgreSQL log record recognised in 2,597 lines (--format stderr); "
                      "name the format with --format and, for a stderr log, its log_line_prefix with --prefix"]
    assert "orphan_lines 2597" in done.stderr and "Traceback" not in done.stderr


def test_a_partly_readable_log_says_how_many_lines_it_could_not_place(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "postgresql.log"
    log.write_text("pg_ctl: starting\nwaiting for server\n"
                   "2026-11-27 02:10:00.000 UTC [41] LOG:  statement: CREATE TABLE t (id int)\n"
                   "2026-11-27 02:10:01.000 UTC [41] LOG:  statement: DROP TABLE t\n")
    done = stack.cli("ingest", "postgres-log", "--server", "db", "--prefix", "%m [%p] ", str(log))
    assert done.returncode == 0, done.stderr
    assert "postgres-log: 2 records -> 2 events" in done.stderr, done.stderr
    assert "2 lines read but not sent as events: orphan_lines 2 (outside any record" in done.stderr, done.stderr


OTRF_CSV = DATA / "iam" / "otrf-security-datasets" / "atomic" / "aws" / "discovery" / "AWS_S3_HoneyBucketLogs.csv"


def test_cloudtrail_csv_export_is_read_row_by_row_and_resumed(stack: Stack, tmp_path: Path) -> None:
    _need(OTRF_CSV)
    export = tmp_path / "honey.csv"
    text = OTRF_CSV.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    export.write_text("".join(lines[:-1]))  # all but the last row now, that one later
    first = stack.cli("ingest", "cloudtrail", str(export))
    assert first.returncode == 0, first.stderr
    assert "cloudtrail: 300 records -> 300 events" in first.stderr, first.stderr
    with export.open("a") as fh:
        fh.write(lines[-1])
    again = stack.cli("ingest", "cloudtrail", str(export))
    assert again.returncode == 0 and "cloudtrail: 1 records -> 1 events" in again.stderr, again.stderr
    msgs = stack.read_topic(stack.settings.topic_changes, expected=301, timeout=30)
    assert len(msgs) == 301
    # The same events `rules test --on` makes of the file.
    offline, rejected = read_events([OTRF_CSV])
    assert not rejected and sorted(decode(m.value()).id for m in msgs) == sorted(e.id for e in offline)


def test_cloudtrail_folder_reports_what_it_does_not_read(stack: Stack, tmp_path: Path) -> None:
    _need(OTRF_CSV)
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "honey.csv").write_bytes(OTRF_CSV.read_bytes())
    (folder / "notes.md").write_text("# not CloudTrail\n")
    (folder / "inventory.csv").write_text("host,ip\nweb1,10.0.0.1\n")
    done = stack.cli("ingest", "cloudtrail", str(folder))
    assert done.returncode == 1, done.stderr  # inventory.csv went to the DLQ
    assert f"cloudtrail: 1 file(s) not read (not .json, .json.gz, .csv, .csv.gz): {folder / 'notes.md'}" \
        in done.stderr, done.stderr
    assert "cloudtrail: 302 records -> 301 events; 1 rejected to the DLQ (invalid_value 1)" in done.stderr, done.stderr
    (dead,) = stack.read_topic(stack.settings.topic_dlq, expected=1, timeout=30)
    assert b"not a CloudTrail CSV export" in dict(dead.headers())["error"]
