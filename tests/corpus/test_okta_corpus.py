"""The Okta System Log excerpt normalizes into valid envelopes (pipeline/sources/okta.py).

PROVENANCE.md: two hand-transcribed excerpts (head 3 + tail 6 lines) hold 9 events:
user.session.end 1, user.session.start 1, policy.evaluate_sign_on 1,
user.authentication.verify 1, user.authentication.auth_via_mfa 3, group.user_membership.add 1,
app.user_management 1. Run with ``pytest -s`` for counts per type.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from _audit_corpus import OKTA_DIR, missing
from _sources_corpus import check_envelope, print_counts

from pipeline.sources import okta
from pipeline.sources.redact import redact

if _reason := missing(OKTA_DIR):
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus


def _events_of_corpus() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(OKTA_DIR.glob("*.log"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def test_every_okta_event_normalizes_and_counts_per_type() -> None:
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    records = _events_of_corpus()
    for record in records:
        (event,) = okta.to_events(record, scope="corpus", org="example.okta.com")
        check_envelope(event)
        assert redact(event.raw) == event.raw
        assert event.action == record["eventType"]
        session = record["authenticationContext"]["externalSessionId"]
        assert f"session:okta:{session}" in event.links
        request = record["debugContext"]["debugData"].get("requestId")
        if request:
            assert f"request:{request}" in event.links
        counts[event.type] += 1
        ids.add(event.id)
    print_counts("okta", counts)
    assert len(records) == 9
    assert len(ids) == 9  # two anonymised records share uuid "uuid"; the content digest keeps them apart
    assert counts == {
        "iam.mfa.verified": 3,
        "iam.logout": 1,
        "iam.login": 1,
        "iam.okta.policy.evaluate_sign_on": 1,
        "iam.auth.verified": 1,
        "access.group.member_added": 1,
        "iam.okta.app.user_management": 1,
    }


def test_assurance_kind_and_targets() -> None:
    events = [okta.to_events(r, scope="corpus")[0] for r in _events_of_corpus()]
    mfa = [e for e in events if e.type == "iam.mfa.verified"]
    assert {e.actor.assurance for e in mfa} == {"mfa"}
    assert {e.actor.assurance for e in events if e.type != "iam.mfa.verified"} == {"authenticated"}
    (membership,) = [e for e in events if e.type == "access.group.member_added"]
    assert (membership.target.kind, membership.target.name, membership.subject) == (
        "okta.usergroup",
        "Sales",
        "target.user@test.com",
    )
    (system,) = [e for e in events if e.actor.kind == "service"]
    assert system.actor.id == "okta:system@okta.com"
    assert (system.target.kind, system.target.name) == ("okta.appinstance", "Google Workspace")
