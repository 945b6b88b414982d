"""One format detection for `ingest postgres-log` and `rules test --on`: a psql transcript with
pgaudit ``AUDIT:`` lines (pgaudit's regression output) is read as such by :func:`fetch_log` too,
resumably (a QA walk saw `ingest postgres-log pgaudit.out` read it as a stderr log: 0 events,
2,597 orphan lines, exit 0)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.rules.offline import read_events
from pipeline.sources import postgres_log as pg

SETUP = "".join(f"-- setup line {n}\nSELECT {n};\n" for n in range(40))  # first AUDIT: past line 50
TRANSCRIPT = (
    SETUP
    + "NOTICE:  AUDIT: SESSION,1,1,MISC,SET,,,SET pgaudit.log = 'all',<not logged>\n"
    "\\connect - regress_user1\n"
    'NOTICE:  AUDIT: SESSION,1,1,DDL,CREATE TABLE,TABLE,public.t,"CREATE TABLE t\n(\n\tid INT\n)",<not logged>\n'
)
MORE = (
    "\\connect - regress_user2\n"
    "WARNING:  AUDIT: SESSION,2,1,ROLE,CREATE ROLE,,,CREATE USER u password <REDACTED>,<not logged>\n"
)


@pytest.mark.parametrize(("lines", "expected"), [
    (TRANSCRIPT.splitlines(keepends=True), "pgaudit-transcript"),
    (["2026-01-01 10:00:00 UTC [1] LOG:  AUDIT: SESSION,1,1,READ,SELECT,,,SELECT 1,<not logged>\n"], "stderr"),
    (['2026-01-01 10:00:00.123 UTC,"u","db",1,"h",x,1,"SELECT",2026-01-01 10:00:00 UTC,1/1,0,LOG,00000,"m"\n'],
     "csvlog"),
    (['{"timestamp":"2026-01-01 10:00:00.123 UTC","message":"m"}\n'], "jsonlog"),
    (["SELECT 1;\n", "plain text\n"], "stderr"),
])
def test_detect_format(lines: list[str], expected: str) -> None:
    assert pg.detect_format(lines) == expected


def _plain(records: list[pg.LogRecord]) -> list[pg.LogRecord]:
    return [replace(r, offset=None) for r in records]


def test_fetch_log_reads_a_transcript_as_parse_does(tmp_path: Path) -> None:
    path = tmp_path / "pgaudit.out"
    path.write_text(TRANSCRIPT)
    stats: Counter[str] = Counter()
    got = [r for r, _ in pg.fetch_log(path, None, stats=stats)]
    assert _plain(got) == list(pg.parse_pgaudit_transcript(TRANSCRIPT))
    assert [(r.format, r.user, r.line) for r in got] == [("pgaudit-transcript", None, 81),
                                                         ("pgaudit-transcript", "regress_user1", 83)]
    assert stats["orphan_lines"] == 0


def test_a_resumed_transcript_keeps_its_sessions_users_and_times(tmp_path: Path) -> None:
    path = tmp_path / "pgaudit.out"
    path.write_text(TRANSCRIPT)
    first = list(pg.fetch_log(path, None))
    with path.open("a") as fh:
        fh.write(MORE)
    cursor = first[-1][1]
    resumed = [r for r, _ in pg.fetch_log(path, cursor)]
    whole = list(pg.parse_pgaudit_transcript(TRANSCRIPT + MORE))
    assert _plain(resumed) == whole[len(first):], "the resumed read repeats nothing and derives the same"
    assert [(r.user, r.session_id) for r in resumed] == [("regress_user2", "pgaudit-transcript.2")]
    assert list(pg.fetch_log(path, list(pg.fetch_log(path, cursor))[-1][1])) == []


def test_offline_reader_and_fetch_log_agree(tmp_path: Path) -> None:
    path = tmp_path / "pgaudit.out"
    path.write_text(TRANSCRIPT + MORE)
    events, rejected = read_events([path], kind="postgres-log", server="s")
    assert not rejected
    expected = [e for r, _ in pg.fetch_log(path, None) for e in pg.to_events(r, scope="default", server="s")]
    assert [e.id for e in events] == [e.id for e in expected] and len(events) == 3
