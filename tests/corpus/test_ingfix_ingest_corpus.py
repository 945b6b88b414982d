"""`ingest` and `rules test --on` read the same real files the same way (one reader each):
pgaudit's regression transcript and OTRF's CloudTrail CSV export."""

from __future__ import annotations

from dataclasses import replace

import pytest
from _audit_corpus import OTRF_CSV, PGAUDIT_FILE, missing

from pipeline.cli.ingest import fetch_cloudtrail
from pipeline.rules.offline import read_events
from pipeline.sources import cloudtrail, postgres_log


def test_fetch_log_detects_the_pgaudit_transcript_and_reads_its_415_records() -> None:
    if reason := missing(PGAUDIT_FILE):
        pytest.skip(reason)
    got = [replace(r, offset=None) for r, _ in postgres_log.fetch_log(PGAUDIT_FILE, None)]
    assert got == list(postgres_log.parse_pgaudit_transcript(PGAUDIT_FILE.read_text(encoding="utf-8")))
    assert len(got) == 415
    events, rejected = read_events([PGAUDIT_FILE], server="regress")
    assert not rejected and len(events) == 415


def test_ingest_and_rules_test_read_the_otrf_csv_export_alike() -> None:
    if reason := missing(OTRF_CSV):
        pytest.skip(reason)
    raws = list(fetch_cloudtrail([OTRF_CSV], None))
    assert len(raws) == 301 and raws[0].origin == f"{OTRF_CSV}:2" and raws[-1].cursor == {"after": str(OTRF_CSV),
                                                                                             "row": 302}
    ingested = [e for r in raws for e in cloudtrail.to_events(r.payload, scope="default")]
    offline, rejected = read_events([OTRF_CSV])
    assert not rejected and [e.id for e in offline] == [e.id for e in ingested] and len(offline) == 301
