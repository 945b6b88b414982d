"""GitHub organization audit-log normalizer (synthetic entries shaped like the REST API's)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.model import decode, encode
from pipeline.sources import github_audit

SHA = "c2b54496f96d8bd518d1b95b3f91e25d7e5a3068"


def _entry(action: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "actor": "octocat", "org": "acme", "created_at": 1714557600000, **extra}


@pytest.mark.parametrize(
    ("action", "type_"),
    [
        ("pull_request.merge", "change.merged"),
        ("pull_request.create", "change.opened"),
        ("pull_request.create_review_request", "change.review_requested"),
        ("pull_request_review.submit", "change.reviewed"),
        ("protected_branch.create", "config.branch_protection.create"),
        ("protected_branch.policy_override", "config.branch_protection.policy_override"),
        ("repository_ruleset.update", "config.ruleset.update"),
        ("hook.create", "config.webhook.create"),
        ("team.add_member", "access.team.add_member"),
        ("org.add_member", "access.org.add_member"),
        ("repo.add_member", "access.repo.add_member"),
        ("personal_access_token.access_granted", "access.personal_access_token.access_granted"),
        ("repo.create", "repo.create"),
        ("repo.access", "repo.access"),
        ("workflows.delete_workflow_run", "ci.workflows.delete_workflow_run"),
        ("git.push", "git.push"),
        ("marketplace_agreement_signature.create", "github.audit.marketplace_agreement_signature.create"),
    ],
)
def test_types(action: str, type_: str) -> None:
    (event,) = github_audit.to_events(_entry(action, repo="acme/web"), scope="acme")
    assert event.type == type_ and event.action == action
    assert decode(encode(event)) == event


def test_actor_time_and_source() -> None:
    (event,) = github_audit.to_events(_entry("repo.create", repo="acme/web"), scope="acme")
    assert event.actor.id == "github:octocat" and event.actor.kind == "human"
    assert event.actor.assurance == "authenticated" and event.actor.verified
    assert event.time.isoformat() == "2024-05-01T10:00:00+00:00"
    assert event.source == "github-audit://acme"
    (bot,) = github_audit.to_events(dict(_entry("repo.create"), actor="dependabot[bot]"), scope="acme")
    assert bot.actor.kind == "service"
    ts = {"action": "org.add_member", "actor": "a", "org": "acme", "@timestamp": 1714557600000}
    assert github_audit.to_events(ts, scope="acme")[0].time.isoformat() == "2024-05-01T10:00:00+00:00"


def test_pull_request_links_and_target() -> None:
    (merged,) = github_audit.to_events(
        _entry(
            "pull_request.merge",
            repo="acme/web",
            pull_request_url="https://github.com/acme/web/pull/42",
            pull_request_title="Fix checkout",
        ),
        scope="acme",
    )
    assert merged.links == ("change:acme/web#42",)
    assert (merged.target.kind, merged.target.id, merged.target.name) == (
        "pull_request",
        "acme/web#42",
        "Fix checkout",
    )
    (numbered,) = github_audit.to_events(
        _entry("pull_request_review.submit", repo="acme/web", data={"pull_request_number": 7}), scope="acme"
    )
    assert numbered.links == ("change:acme/web#7",)
    (run,) = github_audit.to_events(
        _entry("workflows.delete_workflow_run", repo="acme/web", data={"head_sha": SHA}), scope="acme"
    )
    assert run.links == (f"commit:{SHA}",)


def test_team_and_protected_branch_targets_and_outcomes() -> None:
    (team,) = github_audit.to_events(
        _entry("team.add_member", data={"team": "acme/authors"}, user="bob"), scope="acme"
    )
    assert (team.target.kind, team.target.id, team.subject) == ("team", "acme/authors", "bob")
    (rejected,) = github_audit.to_events(
        _entry("protected_branch.rejected_ref_update", repo="acme/web", branch="main"), scope="acme"
    )
    assert rejected.outcome == "failure"
    assert (rejected.target.kind, rejected.target.id) == ("branch_protection_rule", "acme/web:main")
    (org,) = github_audit.to_events(_entry("org.invite_member", user="carol"), scope="acme")
    assert (org.target.kind, org.target.id, org.subject, org.outcome) == ("org", "acme", "carol", "success")


def test_ids() -> None:
    a = github_audit.to_events(_entry("repo.create", _document_id="DOC1"), scope="acme")[0]
    b = github_audit.to_events(_entry("repo.create", _document_id="DOC1", repo="x/y"), scope="acme")[0]
    c = github_audit.to_events(_entry("repo.create"), scope="acme")[0]
    d = github_audit.to_events(_entry("repo.create"), scope="acme")[0]
    assert a.id == b.id and c.id == d.id and a.id != c.id


def test_secrets_in_entries_are_hashed() -> None:
    entry = _entry(
        "personal_access_token.request_created", hashed_token="SGVsbG8gV29ybGQhIHRoaXMgaXMgYSB0b2tlbg=="
    )
    (event,) = github_audit.to_events(entry, scope="acme")
    assert "SGVsbG8gV29ybGQhIHRoaXMgaXMgYSB0b2tlbg==" not in encode(event).decode()


def test_parse_lines_and_malformed() -> None:
    stats: Counter[str] = Counter()
    entries = list(github_audit.parse_lines('{"action": "repo.create"}\n\n[1]\nnope\n', stats=stats))
    assert entries == [{"action": "repo.create"}]
    assert stats == {"entries": 1, "blank_lines": 1, "not_an_entry": 1, "bad_json": 1}
    with pytest.raises(DecodeError) as err:
        github_audit.to_events({"actor": "a", "created_at": 1}, scope="acme")
    assert err.value.field == "$.action"
    with pytest.raises(DecodeError):
        github_audit.to_events({"action": "repo.create", "actor": "a"}, scope="acme")
    with pytest.raises(DecodeError):
        github_audit.to_events(_entry("repo.create", actor=3), scope="acme")
