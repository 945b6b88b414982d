"""CloudTrail CSV exports (OTRF layout) read row by row by one reader, ``cloudtrail.csv_rows``,
for `ingest cloudtrail` (resumable at the row, files it does not read reported) and `rules test`
(a QA walk saw `ingest cloudtrail` send the CSV to the DLQ as bad_json, and skip it in a folder)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli.ingest import CLOUDTRAIL_SUFFIXES, fetch_cloudtrail
from pipeline.errors import DecodeError
from pipeline.rules.offline import read_events
from pipeline.sources import cloudtrail, files

HEADER = ("Event Type,Event Name,Request ID,User ID,Request Parameters,Alert,Event ID,Event DateTime,"
          "Alarm DateTime,Source IP,Request User Agent,Repeated Attempts\n")


def _row(n: int, agent: str = "curl/8") -> str:
    return (f"AwsApiCall,ListObjects,REQ{n},\"{{'type': 'AWSAccount', 'principalId': '', 'accountId': "
            f"'ANONYMOUS_PRINCIPAL'}}\",\"{{'bucketName': 'b{n}'}}\",a,00000000-0000-0000-0000-{n:012d},"
            f"2022-02-18T17:34:{n:02d}Z,2022-02-18T17:39:28+00:00,10.0.0.{n},\"{agent}\",0\n")


BIG = "AwsApiCall," + "x" * 200_000 + "\n"  # a field past the csv module's limit: csv.Error


@pytest.fixture
def csv_limit() -> Iterator[None]:
    """The csv module's default field limit (the csvlog reader raises it process-wide)."""
    before = csv.field_size_limit(131_072)
    try:
        yield
    finally:
        csv.field_size_limit(before)


CSV = HEADER + _row(1) + _row(2, agent="multi\nline agent") + _row(3)


def test_rows_carry_their_lines_and_the_same_records_as_records_from_csv() -> None:
    rows = list(cloudtrail.csv_rows(CSV))
    assert [(r.line, r.line_end) for r in rows] == [(2, 2), (3, 4), (5, 5)]
    assert [r.record for r in rows] == cloudtrail.records_from_csv(CSV)
    assert rows[1].record["userAgent"] == "multi\nline agent" and rows[0].record["eventSource"] == "s3.amazonaws.com"


@pytest.mark.usefixtures("csv_limit")
def test_unreadable_csv_raises_after_the_rows_before_it() -> None:
    rows = cloudtrail.csv_rows(HEADER + _row(1) + BIG)
    assert next(rows).record["requestID"] == "REQ1"
    with pytest.raises(DecodeError, match="not readable as CSV at line"):
        list(rows)


@pytest.mark.parametrize(("line", "expected"), [(HEADER, True), (b"\xef\xbb\xbf" + HEADER.encode(), True),
                                                ("\ufeff" + HEADER, True), ("a,b,c\n", False), ("", False)])
def test_is_csv_export(line: str | bytes, expected: bool) -> None:
    assert cloudtrail.is_csv_export(line) is expected


def test_ingest_reads_csv_rows_and_resumes_after_the_last_row(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(CSV)
    (tmp_path / "b.json").write_text('{"Records": []}')
    got = list(fetch_cloudtrail([tmp_path], None))
    assert [r.origin for r in got] == [f"{tmp_path}/a.csv:2", f"{tmp_path}/a.csv:3", f"{tmp_path}/a.csv:5",
                                       f"{tmp_path}/b.json"]
    assert [r.payload["requestID"] for r in got[:3]] == ["REQ1", "REQ2", "REQ3"]
    assert got[1].original == _row(2, agent="multi\nline agent").encode()
    # Interrupted after the second row: the rerun starts at the third; after the last, nothing but new rows.
    assert [r.origin for r in fetch_cloudtrail([tmp_path], got[1].cursor)][0] == f"{tmp_path}/a.csv:5"
    with (tmp_path / "a.csv").open("a") as fh:
        fh.write(_row(4))
    again = list(fetch_cloudtrail([tmp_path], got[2].cursor))
    assert [r.origin for r in again] == [f"{tmp_path}/a.csv:6", f"{tmp_path}/b.json"]
    assert list(fetch_cloudtrail([tmp_path], got[3].cursor)) == []  # an older {"after": file} cursor


def test_a_csv_that_is_not_a_cloudtrail_export_is_one_rejected_record(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (got,) = fetch_cloudtrail([tmp_path], None)
    assert isinstance(got.payload, DecodeError) and "not a CloudTrail CSV export" in str(got.payload)
    assert list(fetch_cloudtrail([tmp_path], got.cursor)) == []


@pytest.mark.usefixtures("csv_limit")
def test_ingest_sends_the_unreadable_rest_of_a_csv_as_one_rejected_record(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(HEADER + _row(1) + BIG)
    first, bad = fetch_cloudtrail([tmp_path], None)
    assert first.payload["requestID"] == "REQ1"
    assert isinstance(bad.payload, DecodeError) and "a.csv: not readable as CSV at line" in str(bad.payload)
    assert bad.original == BIG.encode()
    assert list(fetch_cloudtrail([tmp_path], bad.cursor)) == []


def test_files_a_folder_holds_that_are_not_read_are_listed(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text(CSV)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("x")
    assert files.unread_files([tmp_path], CLOUDTRAIL_SUFFIXES) == [tmp_path / "notes.txt"]
    assert files.unread_files([tmp_path / "x.csv"], CLOUDTRAIL_SUFFIXES) == []


@pytest.mark.usefixtures("csv_limit")
def test_offline_reader_rejects_unreadable_csv_and_keeps_the_rows_before(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + _row(1) + BIG)
    events, rejected = read_events([path])
    assert len(events) == 1 and len(rejected) == 1 and "not readable as CSV" in rejected[0].reason
