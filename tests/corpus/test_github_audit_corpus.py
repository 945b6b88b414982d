"""The GitHub organization audit-log excerpt normalizes into valid envelopes
(pipeline/sources/github_audit.py).

PROVENANCE.md: 71 hand-transcribed entries: protected_branch.rejected_ref_update 17,
team.add_member 10, organization_default_label.create 9, org.add_member 7, org.invite_member 6,
team.add_repository 3, repo.create 2, team.create 2, workflows.delete_workflow_run 2,
pull_request.merge 2, and eleven actions once. Run with ``pytest -s`` for counts per type.
"""

from __future__ import annotations

from collections import Counter

import pytest
from _audit_corpus import GITHUB_AUDIT_FILE, missing
from _sources_corpus import check_envelope, print_counts

from pipeline.sources import github_audit
from pipeline.sources.redact import redact

if _reason := missing(GITHUB_AUDIT_FILE):
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.corpus


def test_every_entry_normalizes_and_counts_per_type() -> None:
    stats: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    ids: set[str] = set()
    for entry in github_audit.parse_lines(GITHUB_AUDIT_FILE.read_text(encoding="utf-8"), stats=stats):
        (event,) = github_audit.to_events(entry, scope="corpus")
        check_envelope(event)
        assert redact(event.raw) == event.raw
        assert event.actor.id == "github:github-actor"
        counts[event.type] += 1
        actions[entry["action"]] += 1
        ids.add(event.id)
    print_counts("github audit", counts)
    assert stats == {"entries": 71}
    assert len(ids) == 71
    assert (
        actions["protected_branch.rejected_ref_update"]
        == counts["config.branch_protection.rejected_ref_update"]
        == 17
    )
    assert counts["access.team.add_member"] == 10
    assert counts["config.default_label.create"] == 9
    assert counts["access.org.add_member"] == 7 and counts["access.org.invite_member"] == 6
    assert counts["access.team.add_repository"] == 3 and counts["access.team.create"] == 2
    assert counts["repo.create"] == 2 and counts["change.merged"] == 2
    assert counts["ci.workflows.delete_workflow_run"] == 2
    for once in (
        "change.opened",
        "change.reviewed",
        "change.review_requested",
        "config.branch_protection.create",
        "config.vulnerability_alerts.disable",
        "access.repo.add_member",
        "access.org.oauth_app_access_approved",
        "access.integration_installation.create",
        "repo.transfer",
        "repo.actions_enabled",
        "repo.change_merge_setting",
    ):
        assert counts[once] == 1, once
    assert sum(counts.values()) == 71


def test_rejected_pushes_fail_and_workflow_runs_link_their_commit() -> None:
    events = [
        github_audit.to_events(e, scope="corpus")[0]
        for e in github_audit.parse_lines(GITHUB_AUDIT_FILE.read_text(encoding="utf-8"))
    ]
    assert {e.outcome for e in events if e.type == "config.branch_protection.rejected_ref_update"} == {
        "failure"
    }
    runs = [e for e in events if e.type == "ci.workflows.delete_workflow_run"]
    assert all(len(e.links) == 1 and e.links[0].startswith("commit:") for e in runs)
    teams = [e for e in events if e.type.startswith("access.team.")]
    assert len(teams) == 15
    assert {(e.target.kind, e.target.id) for e in teams} == {
        ("team", "Example-Org/authors"),
        ("team", "Example-Org/admins"),
    }
    assert {e.subject for e in teams if e.type == "access.team.add_member"} == {"github-user"}
