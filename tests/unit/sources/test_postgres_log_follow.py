"""Following PostgreSQL logs (fetch_log): byte-offset resume, torn records, rotation, reused names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.sources import postgres_log as pg

DATA = Path("/work/shared/data/database/pgbadger-fixtures")
CSV_FILES = ("csv_statement_without_duration.log", "anonymize.log")


def _csv_text() -> str:
    if not all((DATA / n).exists() for n in CSV_FILES):
        pytest.skip("pgbadger csvlog fixtures absent")
    text = "".join((DATA / n).read_text(encoding="utf-8") for n in CSV_FILES)
    # the fixtures have no multi-line row: add copies whose statement spans lines (and a quote)
    first = text.splitlines(keepends=True)[0]
    assert " FROM " in first
    multi = first.replace(" FROM ", '\n  ""x""\nFROM ', 1)
    # torn inside application_name (the 23rd column), a row would parse as the 23-column layout
    assert '"example app"' in first
    return multi + text + multi.replace('"example app"', '"example\napp"', 1)


def _json_text(n: int = 60) -> str:
    if not (DATA / "cnpg.log").exists():
        pytest.skip("cnpg.log fixture absent")
    return "".join((DATA / "cnpg.log").read_text(encoding="utf-8").splitlines(keepends=True)[:n])


def _key(r: pg.LogRecord) -> tuple[Any, ...]:
    return (r.session_id, r.session_line, r.message, r.time_text, r.application_name, r.backend_type)


def _drain(path: Path, cursor: Any, **kw: Any) -> tuple[list[pg.LogRecord], Any]:
    out = []
    for record, after in pg.fetch_log(path, cursor, **kw):
        out.append(record)
        cursor = after
    return out, cursor


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_resume_at_every_record_boundary(tmp_path: Path, fmt: str) -> None:
    text = _csv_text() if fmt == "csvlog" else _json_text()
    f = tmp_path / ("pg.csv" if fmt == "csvlog" else "pg.json")
    f.write_text(text, encoding="utf-8")
    full = list(pg.fetch_records(f, format=fmt))
    assert len(full) >= 8
    if fmt == "csvlog":
        assert any(r.line_end != r.line for r in full), "want a multi-line record"
    pairs = list(pg.fetch_log(f, None, format=fmt))
    assert [_key(r) for r, _ in pairs] == [_key(r) for r in full]
    # positions are the whole file's, and equal to what a full parse says
    assert [(r.line, r.line_end, r.offset) for r, _ in pairs] == [
        (r.line, r.line_end, r.offset) for r in full
    ]
    for i, (_, cursor) in enumerate(pairs):
        rest = list(pg.fetch_log(f, cursor, format=fmt))
        assert [_key(r) for r, _ in rest] == [_key(r) for r in full[i + 1 :]], f"resume after record {i}"
        assert [(r.line, r.offset) for r, _ in rest] == [(r.line, r.offset) for r in full[i + 1 :]]
    # the cursor survives JSON (it is committed to Kafka as JSON)
    import orjson

    assert list(pg.fetch_log(f, orjson.loads(orjson.dumps(pairs[0][1])), format=fmt))[0][0] == pairs[1][0]
    # the same with a tiny read size (records spanning reads)
    small = [_key(r) for r, _ in pg.fetch_log(f, None, format=fmt, chunk_bytes=64)]
    assert small == [_key(r) for r in full]


@pytest.mark.parametrize("fmt", ["csvlog", "jsonlog"])
def test_torn_last_record_waits_until_complete(tmp_path: Path, fmt: str) -> None:
    text = _csv_text() if fmt == "csvlog" else _json_text()
    data = text.encode()
    f = tmp_path / "pg.log"
    full = [_key(r) for r in pg.parse(text, format=fmt)]
    seen: list[tuple[Any, ...]] = []
    cursor = None
    # grow the file a few bytes at a time: every cut point, including inside multi-line rows
    step = 7 if fmt == "csvlog" else 97
    for end in [*range(0, len(data), step), len(data)]:
        f.write_bytes(data[:end])
        got, cursor = _drain(f, cursor, format=fmt, final=False)
        seen.extend(_key(r) for r in got)
        assert seen == full[: len(seen)], f"at byte {end}"
    assert seen == full


def test_torn_csv_row_inside_quoted_field_is_not_a_short_row(tmp_path: Path) -> None:
    text = _csv_text()
    full = list(pg.parse(text, format="csvlog"))
    multi = next(r for r in full if r.line_end != r.line)
    lines = text.splitlines(keepends=True)
    f = tmp_path / "pg.csv"
    # everything up to the multi-line record's first line (ends in \n, quote still open)
    f.write_text("".join(lines[: multi.line]), encoding="utf-8")
    got, cursor = _drain(f, None, format="csvlog")
    assert _key(multi) not in [_key(r) for r in got]
    assert all(len(r.message) for r in got)
    f.write_text(text, encoding="utf-8")
    more, _ = _drain(f, cursor, format="csvlog")
    assert [_key(r) for r in got + more] == [_key(r) for r in full]


def _touch(f: Path, t: int) -> None:
    os.utime(f, ns=(t * 10**9, t * 10**9))


def test_directory_rotation_new_file_and_reused_name(tmp_path: Path) -> None:
    text = _csv_text()
    lines = text.splitlines(keepends=True)
    rows = ["".join(lines[(r.line or 1) - 1 : r.line_end]).encode() for r in pg.parse(text, format="csvlog")]
    assert len(rows) >= 8
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "ignored.json").write_text('{"x": 1}\n')
    a, b = logdir / "postgresql-Mon.csv", logdir / "postgresql-Tue.csv"
    seen: list[tuple[Any, ...]] = []
    expected: list[bytes] = []

    def poll(cursor: Any, final: bool = False) -> Any:
        got, cursor = _drain(logdir, cursor, format="csvlog", final=final)
        seen.extend(_key(r) for r in got)
        return cursor

    def expect() -> list[tuple[Any, ...]]:
        return [_key(r) for r in pg.parse(b"".join(expected).decode(), format="csvlog")]

    a.write_bytes(rows[0] + rows[1])
    _touch(a, 100)
    expected += rows[:2]
    cursor = poll(None)
    assert seen == expect()
    with a.open("ab") as fh:  # written after the last poll, then the server rotates
        fh.write(rows[2])
    _touch(a, 200)
    expected.append(rows[2])
    b.write_bytes(rows[3])
    _touch(b, 300)
    expected.append(rows[3])
    cursor = poll(cursor)
    assert seen == expect()
    cursor = poll(cursor)  # nothing new: nothing repeated
    assert seen == expect()
    # log_truncate_on_rotation: Mon's name is reused a week later, as a new file (new inode)...
    a.unlink()
    a.write_bytes(rows[4] + rows[5])
    _touch(a, 400)
    expected += rows[4:6]
    cursor = poll(cursor)
    assert seen == expect()
    # ... or truncated in place (same inode, new content longer than the saved offset)
    with b.open("r+b") as rw:
        rw.truncate(0)
        rw.write(rows[6] + rows[7] + rows[0])
    _touch(b, 500)
    expected += [rows[6], rows[7], rows[0]]
    cursor = poll(cursor, final=True)
    assert seen == expect()
    assert cursor["path"] == str(b.resolve()) and str(a.resolve()) in cursor["files"]


def test_legacy_line_cursor_of_a_single_file(tmp_path: Path) -> None:
    text = _csv_text()
    f = tmp_path / "pg.csv"
    f.write_text(text, encoding="utf-8")
    full = list(pg.fetch_records(f))
    old = {"inode": f.stat().st_ino, "line": full[2].line_end}
    got, _ = _drain(f, old)
    assert [_key(r) for r in got] == [_key(r) for r in full[3:]]


def test_stderr_last_record_held_until_next_record_or_final(tmp_path: Path) -> None:
    f = tmp_path / "pg.log"
    first = "2024-05-01 10:00:02.000 UTC [4242] alice@shop ERROR:  boom\n"
    f.write_text(first, encoding="utf-8")
    got, cursor = _drain(f, None, format="stderr", final=False)
    assert got == []
    with f.open("a") as fh:
        fh.write(
            "2024-05-01 10:00:02.000 UTC [4242] alice@shop STATEMENT:  SELECT 1\n"
            "2024-05-01 10:00:03.000 UTC [4242] alice@shop LOG:  statement: SELECT 2\n"
        )
    got, cursor = _drain(f, cursor, format="stderr", final=False)
    assert [(r.message, r.query) for r in got] == [("boom", "SELECT 1")]
    got, cursor = _drain(f, cursor, format="stderr", final=True)
    assert [r.message for r in got] == ["statement: SELECT 2"]
    assert _drain(f, cursor, format="stderr")[0] == []


def test_derived_sessions_carry_over_resumes(tmp_path: Path) -> None:
    """Cloud SQL/stderr logs without %c: session ids derived from connection lines survive a
    resume at any record (the open sessions travel in the cursor), also through JSON."""
    import orjson

    if not (DATA / "cloudsql.log").exists():
        pytest.skip("cloudsql.log fixture absent")
    lines = (DATA / "cloudsql.log").read_text(encoding="utf-8").splitlines(keepends=True)[:400]
    f = tmp_path / "cloudsql.json"
    f.write_text("".join(lines), encoding="utf-8")
    full = list(pg.fetch_records(f, format="cloudsql"))
    assert sum(1 for r in full if r.session_id_derived) > 20
    want = [(_key(r), r.session_id_derived) for r in full]
    pairs = list(pg.fetch_log(f, None, format="cloudsql"))
    assert [(_key(r), r.session_id_derived) for r, _ in pairs] == want
    # read in small parts (a part's last record is read again with the next part)
    small = list(pg.fetch_log(f, None, format="cloudsql", chunk_bytes=300))
    assert [(_key(r), r.session_id_derived) for r, _ in small] == want
    for i, (_, cursor) in enumerate(pairs):
        cursor = orjson.loads(orjson.dumps(cursor))
        rest = [(_key(r), r.session_id_derived) for r, _ in pg.fetch_log(f, cursor, format="cloudsql")]
        assert rest == want[i + 1 :], f"resume after record {i}"
    # growing line by line, the last record held until the next one starts
    g = tmp_path / "grow.json"
    seen: list[Any] = []
    grow_cursor: Any = None
    for n in [*range(0, len(lines), 3), len(lines)]:
        g.write_text("".join(lines[:n]), encoding="utf-8")
        got, grow_cursor = _drain(g, grow_cursor, format="cloudsql", final=n >= len(lines))
        seen.extend((_key(r), r.session_id_derived) for r in got)
    got, grow_cursor = _drain(g, grow_cursor, format="cloudsql", final=True)
    seen.extend((_key(r), r.session_id_derived) for r in got)
    assert seen == want
