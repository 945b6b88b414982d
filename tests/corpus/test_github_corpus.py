"""Every octokit webhook payload example normalizes into valid envelopes (pipeline/sources/github.py).

The folder name of each payload is its ``X-GitHub-Event`` name (see the data's PROVENANCE.md).
Run with ``pytest -s`` to see the event count per type.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _sources_corpus import GITHUB_DIR, check_envelope, missing_reason, print_counts

from pipeline.sources import github
from pipeline.sources.redact import redact

_reason = missing_reason(GITHUB_DIR)
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus

FILES = sorted(GITHUB_DIR.rglob("*.json"))
# What a webhook receiver would pass: the delivery time (payloads of some kinds carry no time).
RECEIVED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EXPECTED_FILES = 153
#: The types each event kind (payload folder) may map to; unlisted kinds are generic.
FAMILY = {
    "push": r"git\.push",
    "create": r"git\.ref\.created",
    "delete": r"git\.ref\.deleted",
    "pull_request": r"change\.(?!reviewed$|review_dismissed$|review_edited$)[a-z_]+",
    "pull_request_review": r"change\.(reviewed|review_[a-z_]+)",
    "release": r"release\.[a-z_]+",
    "deployment": r"deploy\.created",
    "deployment_status": r"deploy\.[a-z_]+",
    "workflow_run": r"ci\.run\.[a-z_]+",
    "workflow_job": r"ci\.job\.[a-z_]+",
    "check_run": r"ci\.check\.[a-z_]+",
    "check_suite": r"ci\.suite\.[a-z_]+",
    "member": r"access\.member\.[a-z_]+",
    "membership": r"access\.team\.member_[a-z_]+",
    "team": r"access\.team\.(?!member_)[a-z_]+",
    "repository": r"repo\.[a-z_]+",
    "branch_protection_rule": r"config\.branch_protection\.[a-z_]+",
}


def _normalize(path: Path) -> list:
    payload = json.loads(path.read_text(encoding="utf-8"))
    return github.to_events(payload, event_name=path.parent.name, scope="corpus", received_at=RECEIVED_AT)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(GITHUB_DIR)) for p in FILES])
def test_payload_normalizes_to_valid_envelopes(path: Path) -> None:
    events = _normalize(path)

    assert len(events) == 1
    for event in events:
        check_envelope(event)
        assert event.source.startswith("github://")
        assert event.actor.principal.startswith("github:")
        assert event.actor.assurance == "authenticated"
        # raw is the redacted payload, so redacting again changes nothing
        assert redact(event.raw) == event.raw
        assert re.fullmatch(
            FAMILY.get(path.parent.name, rf"github\.{path.parent.name}(\.[a-z0-9_-]+)?"), event.type
        )
    # pure and deterministic: the same payload gives the same bytes
    assert [e.id for e in _normalize(path)] == [e.id for e in events]


def test_every_payload_becomes_an_event_and_counts_per_type() -> None:
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    for path in FILES:
        for event in _normalize(path):
            counts[event.type] += 1
            ids.add(event.id)
    print_counts(f"github ({len(FILES)} payloads)", counts)

    assert len(FILES) == EXPECTED_FILES
    assert sum(counts.values()) >= EXPECTED_FILES
    assert len(ids) == sum(counts.values()), "two different payloads got the same id"
    # every folder (X-GitHub-Event) maps to its family of types; the folder counts are PROVENANCE.md's
    by_family = Counter(_family(t) for t in counts.elements())
    assert by_family["git.push"] == 6
    assert by_family["git.ref"] == 4 + 3
    assert by_family["change"] == 28 + 3
    assert by_family["deploy"] == 3 + 3
    assert by_family["ci.run"] == 4 and by_family["ci.job"] == 7
    assert by_family["ci.check"] == 8 and by_family["ci.suite"] == 8
    assert by_family["release"] == 12 and by_family["repo"] == 12
    assert by_family["access.member"] == 3 and by_family["access.team"] == 4 + 5
    assert by_family["config.branch_protection"] == 4
    assert by_family["github"] == EXPECTED_FILES - sum(n for f, n in by_family.items() if f != "github")


def _family(type_: str) -> str:
    for family in (
        "git.push",
        "git.ref",
        "ci.run",
        "ci.job",
        "ci.check",
        "ci.suite",
        "access.member",
        "access.team",
        "config.branch_protection",
    ):
        if type_.startswith(family + ".") or type_ == family:
            return family
    return type_.split(".", 1)[0]


def test_links_in_the_corpus_are_strong_keys_of_the_right_shape() -> None:
    for path in FILES:
        (event,) = _normalize(path)
        for link in event.links:
            kind, _, value = link.partition(":")
            if kind == "commit":
                assert len(value) == 40 and int(value, 16) != 0, link
            elif kind == "change":
                repo, _, number = value.partition("#")
                assert repo.count("/") == 1 and number.isdigit(), link
            elif kind == "deploy":
                assert value.isdigit(), link
            else:
                pytest.fail(f"{path}: unexpected link {link}")
