"""`ingest` and `rules test --on` read the same real files the same way (one reader each):
pgaudit's regression transcript and OTRF's CloudTrail CSV export."""

from __future__ import annotations

from dataclasses import replace

import pytest
from _audit_corpus import PGAUDIT_FILE, missing

from pipeline.rules.offline import read_events
from pipeline.sources import postgres_log


def test_fetch_log_detects_the_pgaudit_transcript_and_reads_its_415_records() -> None:
    if reason := missing(PGAUDIT_FILE):
        pytest.skip(reason)
    got = [replace(r, offset=None) for r, _ in postgres_log.fetch_log(PGAUDIT_FILE, None)]
    assert got == list(postgres_log.parse_pgaudit_transcript(PGAUDIT_FILE.read_text(encoding="utf-8")))
    assert len(got) == 415
    events, rejected = read_events([PGAUDIT_FILE], server="regress")
    assert not rejected and len(events) == 415
