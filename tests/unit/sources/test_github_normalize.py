"""GitHub webhook normalizer (pipeline/sources/github.py) on small hand-written payloads:
mapping rules, links, ids, time fallbacks, and malformed input raising DecodeError."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.model import decode, encode, event_id
from pipeline.sources import github

SHA_A = "a" * 39 + "1"
SHA_B = "b" * 39 + "2"
SHA_M = "c" * 39 + "3"
ZERO = "0" * 40
RECEIVED = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def repo(**extra: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "name": "shop",
        "full_name": "acme/shop",
        "pushed_at": 1717243200,  # 2024-06-01T12:00:00Z
        "updated_at": "2024-05-01T00:00:00Z",
        **extra,
    }


def sender(login: str = "alice", type_: str = "User") -> dict[str, Any]:
    return {"login": login, "id": 7, "type": type_}


def pr(number: int = 5, **extra: Any) -> dict[str, Any]:
    return {
        "id": 99,
        "number": number,
        "title": "Raise the pool size",
        "state": "open",
        "merged": False,
        "merged_at": None,
        "closed_at": None,
        "updated_at": "2024-06-01T10:00:00Z",
        "created_at": "2024-06-01T09:00:00Z",
        "merge_commit_sha": SHA_M,
        "head": {"ref": "pool", "sha": SHA_A},
        "base": {"ref": "main", "sha": SHA_B},
        **extra,
    }


def one(payload: dict[str, Any], event_name: str, **kw: Any) -> Any:
    events = github.to_events(payload, event_name=event_name, scope="acme", **kw)
    assert len(events) == 1
    (event,) = events
    assert decode(encode(event)) == event
    return event


# --- mapping ---------------------------------------------------------------------------------


def test_push_links_after_and_every_commit_and_uses_the_push_time() -> None:
    payload = {
        "ref": "refs/heads/main",
        "before": SHA_B,
        "after": SHA_A,
        "forced": False,
        "deleted": False,
        "commits": [{"id": SHA_B, "message": "one"}, {"id": SHA_A, "message": "two"}],
        "head_commit": {"id": SHA_A, "timestamp": "2024-05-31T08:00:00Z"},
        "pusher": {"name": "alice", "email": "alice@acme.io"},
        "repository": repo(),
        "sender": sender(),
    }
    event = one(payload, "push")
    assert event.type == "git.push" and event.action == "push"
    assert event.links == (f"commit:{SHA_A}", f"commit:{SHA_B}")
    assert event.target.kind == "branch" and event.target.id == "acme/shop@main"
    assert event.time == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # repository.pushed_at, not the commit
    assert event.raw["commits"][1]["message"] == "two"
    assert event.raw["pusher"]["email"] == "alice@acme.io"
    assert event.actor.id == "github:alice" and event.actor.kind == "human"
    assert event.actor.assurance == "authenticated" and event.actor.verified


def test_force_push_and_deleted_tag() -> None:
    base = {"ref": "refs/tags/v1", "before": SHA_A, "after": ZERO, "deleted": True, "commits": [],
            "repository": repo(), "sender": sender()}  # fmt: skip
    deleted = one(base, "push")
    assert deleted.action == "delete" and deleted.links == () and deleted.target.kind == "tag"
    forced = one(dict(base, ref="refs/heads/main", after=SHA_B, deleted=False, forced=True), "push")
    assert forced.action == "force_push" and forced.links == (f"commit:{SHA_B}",)


def test_merged_pull_request_links_change_head_and_merge_commit() -> None:
    payload = {
        "action": "closed",
        "number": 5,
        "pull_request": pr(merged=True, merged_at="2024-06-01T11:00:00Z", closed_at="2024-06-01T11:00:00Z"),
        "repository": repo(),
        "sender": sender(),
    }
    event = one(payload, "pull_request")
    assert event.type == "change.merged" and event.action == "merge"
    assert event.links == ("change:acme/shop#5", f"commit:{SHA_A}", f"commit:{SHA_M}")
    assert event.time == datetime(2024, 6, 1, 11, 0, tzinfo=UTC)
    assert event.target.kind == "pull_request" and event.target.id == "acme/shop#5"


def test_closed_unmerged_pull_request_does_not_link_the_test_merge_commit() -> None:
    payload = {"action": "closed", "pull_request": pr(closed_at="2024-06-01T11:30:00Z"),
               "repository": repo(), "sender": sender()}  # fmt: skip
    event = one(payload, "pull_request")
    assert event.type == "change.closed"
    assert f"commit:{SHA_M}" not in event.links


@pytest.mark.parametrize("action", ["opened", "synchronize", "labeled", "ready_for_review"])
def test_other_pull_request_actions(action: str) -> None:
    event = one(
        {"action": action, "pull_request": pr(), "repository": repo(), "sender": sender()}, "pull_request"
    )
    assert event.type == f"change.{action}"
    assert event.time == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


def test_review_submitted() -> None:
    payload = {
        "action": "submitted",
        "review": {"id": 3, "state": "APPROVED", "commit_id": SHA_A, "submitted_at": "2024-06-01T10:30:00Z"},
        "pull_request": pr(),
        "repository": repo(),
        "sender": sender("bob"),
    }
    event = one(payload, "pull_request_review")
    assert event.type == "change.reviewed" and event.action == "approved"
    assert event.links == ("change:acme/shop#5", f"commit:{SHA_A}")
    assert event.actor.id == "github:bob"


def test_deployment_and_status() -> None:
    deployment = {"id": 42, "sha": SHA_A, "ref": "main", "environment": "production",
                  "created_at": "2024-06-01T12:01:00Z"}  # fmt: skip
    created = one(
        {"action": "created", "deployment": deployment, "repository": repo(), "sender": sender()},
        "deployment",
    )
    assert created.type == "deploy.created"
    assert created.links == ("deploy:42", f"commit:{SHA_A}")
    assert created.target.environment == "production"

    def status(state: str) -> Any:
        return one(
            {
                "action": "created",
                "deployment_status": {"id": 9, "state": state, "created_at": "2024-06-01T12:05:00Z"},
                "deployment": deployment,
                "repository": repo(),
                "sender": sender("deploy-bot[bot]", "Bot"),
            },
            "deployment_status",
        )

    ok, failed, errored, running = (
        status("success"),
        status("failure"),
        status("error"),
        status("in_progress"),
    )
    assert (ok.type, ok.outcome) == ("deploy.succeeded", "success")
    assert (failed.type, failed.outcome) == ("deploy.failed", "failure")
    assert (errored.type, errored.outcome) == ("deploy.failed", "failure")
    assert (running.type, running.outcome) == ("deploy.in_progress", "unknown")
    assert ok.links == ("deploy:42", f"commit:{SHA_A}")
    assert ok.actor.kind == "service"
    assert ok.time == datetime(2024, 6, 1, 12, 5, tzinfo=UTC)


def test_workflow_run_links_commit_and_listed_pull_requests() -> None:
    run = {
        "id": 1,
        "name": "ci",
        "path": ".github/workflows/ci.yml",
        "head_sha": SHA_A,
        "head_branch": "pool",
        "status": "completed",
        "conclusion": "failure",
        "updated_at": "2024-06-01T12:10:00Z",
        "pull_requests": [
            {"number": 5, "url": "https://api.github.com/repos/acme/shop/pulls/5",
             "base": {"repo": {"id": 1, "name": "shop"}}},
            {"number": 6, "base": {"repo": {"id": 1, "name": "shop"}}},  # no url: same repository id
            {"number": 7, "base": {"repo": {"id": 999, "name": "upstream"}}},  # unknown repository
        ],
    }  # fmt: skip
    event = one(
        {"action": "completed", "workflow_run": run, "repository": repo(), "sender": sender()}, "workflow_run"
    )
    assert event.type == "ci.run.failed" and event.outcome == "failure"
    assert event.links == (f"commit:{SHA_A}", "change:acme/shop#5", "change:acme/shop#6")
    assert event.target.id == "acme/shop:.github/workflows/ci.yml"


def test_workflow_job_with_deployment_and_unfinished_outcome() -> None:
    job = {"id": 2, "name": "deploy", "workflow_name": "cd", "head_sha": SHA_A, "status": "queued",
           "conclusion": None, "created_at": "2024-06-01T12:00:30Z"}  # fmt: skip
    payload = {"action": "queued", "workflow_job": job, "deployment": {"id": 42, "environment": "prod"},
               "repository": repo(), "sender": sender()}  # fmt: skip
    event = one(payload, "workflow_job")
    assert event.type == "ci.job.queued" and event.outcome == "unknown"
    assert event.links == (f"commit:{SHA_A}", "deploy:42")
    assert event.target.environment == "prod"


def test_access_events_fall_back_to_the_delivery_time() -> None:
    member = {"action": "added", "member": {"login": "eve"}, "repository": repo(), "sender": sender()}
    event = one(member, "member", received_at=RECEIVED)
    assert event.type == "access.member.added" and event.subject == "eve"
    assert event.time == RECEIVED
    # without a delivery time the repository's own timestamp is the documented last resort
    assert one(member, "member").time == datetime(2024, 5, 1, tzinfo=UTC)

    membership = {"action": "removed", "member": {"login": "eve"}, "team": {"slug": "sre", "name": "SRE"},
                  "organization": {"login": "acme"}, "sender": sender()}  # fmt: skip
    event = one(membership, "membership", received_at=RECEIVED)
    assert event.type == "access.team.member_removed"
    assert event.target.kind == "team" and event.target.id == "acme/sre"
    assert event.source == "github://acme"


def test_branch_protection_edit_carries_a_diff() -> None:
    payload = {
        "action": "edited",
        "rule": {"name": "main", "required_approving_review_count": 1, "updated_at": "2024-06-01T12:00:00Z"},
        "changes": {"required_approving_review_count": {"from": 2}},
        "repository": repo(),
        "sender": sender(),
    }
    event = one(payload, "branch_protection_rule")
    assert event.type == "config.branch_protection.edited"
    assert event.diff == {
        "changed": ["required_approving_review_count"],
        "before": {"required_approving_review_count": 2},
        "after": {"required_approving_review_count": 1},
    }


@pytest.mark.parametrize(
    ("event_name", "payload", "expected_type"),
    [
        ("ping", {"zen": "hi", "hook": {"updated_at": "2024-06-01T00:00:00Z"}}, "github.ping"),
        ("org_block", {"action": "blocked", "blocked_user": {"login": "mallory"}}, "github.org_block.blocked"),
        ("installation", {"action": "created", "installation": {"id": 5, "account": {"login": "acme"}}},
         "github.installation.created"),
        ("some_future_event", {"action": "Did-Something"}, "github.some_future_event.did-something"),
    ],
)  # fmt: skip
def test_unknown_kinds_become_generic_events(
    event_name: str, payload: dict[str, Any], expected_type: str
) -> None:
    event = one({**payload, "sender": sender()}, event_name, received_at=RECEIVED)
    assert event.type == expected_type


def test_status_is_generic_but_links_its_commit() -> None:
    payload = {"sha": SHA_A, "state": "failure", "context": "ci", "created_at": "2024-06-01T12:00:00Z",
               "updated_at": "2024-06-01T12:00:00Z", "repository": repo(), "sender": sender()}  # fmt: skip
    event = one(payload, "status")
    assert event.type == "github.status" and event.outcome == "failure"
    assert event.links == (f"commit:{SHA_A}",)


# --- ids -------------------------------------------------------------------------------------


def test_ids_are_deterministic() -> None:
    payload = {"action": "opened", "pull_request": pr(), "repository": repo(), "sender": sender()}
    a = one(payload, "pull_request")
    b = one(copy.deepcopy(payload), "pull_request")
    assert a.id == b.id and encode(a) == encode(b)
    other = one({**payload, "action": "reopened"}, "pull_request")
    assert other.id != a.id
    with_delivery = one(payload, "pull_request", delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert with_delivery.id == event_id("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958")


def test_raw_is_redacted() -> None:
    payload = {"zen": "x", "hook": {"config": {"url": "https://ci.acme.io/hook", "secret": "s3cr3t-value"},
               "updated_at": "2024-06-01T00:00:00Z"}, "repository": repo(), "sender": sender()}  # fmt: skip
    event = one(payload, "ping")
    assert event.raw["hook"]["config"]["secret"].startswith("redacted:hmac-sha256:v1:")
    assert "s3cr3t-value" not in encode(event).decode()
    assert payload["hook"]["config"]["secret"] == "s3cr3t-value"  # the input is not modified


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "event_name", "field"),
    [
        ([], "push", "$"),
        ("not a payload", "push", "$"),
        (None, "push", "$"),
        ({"ref": "refs/heads/main", "after": SHA_A, "repository": repo()}, "push", "$.sender"),
        ({"ref": "refs/heads/main", "repository": repo(), "sender": {"id": 1}}, "push", "$.sender.login"),
        ({"ref": "refs/heads/main", "after": SHA_A, "sender": sender()}, "push", "$.repository"),
        ({"ref": "refs/heads/main", "repository": "acme/shop", "sender": sender()}, "push", "$.repository"),
        ({"ref": "refs/heads/main", "repository": {"id": 1}, "sender": sender()}, "push", "$.repository.full_name"),
        ({"after": SHA_A, "repository": repo(), "sender": sender()}, "push", "$.ref"),
        ({"ref": 5, "repository": repo(), "sender": sender()}, "push", "$.ref"),
        ({"ref": "refs/heads/x", "commits": "many", "repository": repo(), "sender": sender()}, "push", "$.commits"),
        ({"action": "opened", "repository": repo(), "sender": sender()}, "pull_request", "$.pull_request"),
        ({"action": "opened", "pull_request": pr(number="5"), "repository": repo(), "sender": sender()},
         "pull_request", "$.pull_request.number"),
        ({"action": "opened", "pull_request": pr(number=True), "repository": repo(), "sender": sender()},
         "pull_request", "$.pull_request.number"),
        ({"action": 3, "pull_request": pr(), "repository": repo(), "sender": sender()}, "pull_request", "$.action"),
        ({"action": "created", "deployment": {"sha": SHA_A}, "repository": repo(), "sender": sender()},
         "deployment", "$.deployment.id"),
        ({"action": "created", "deployment_status": {"id": 1}, "deployment": {"id": 1}, "repository": repo(),
          "sender": sender()}, "deployment_status", "$.deployment_status.state"),
        ({"action": "added", "member": {"login": "x"}, "team": {"slug": "t"}, "sender": sender()},
         "membership", "$.organization.login"),
        ({"action": "blocked", "sender": sender()}, "org_block", "received_at"),
    ],
)  # fmt: skip
def test_malformed_payloads_raise_decode_error(payload: Any, event_name: str, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        github.to_events(payload, event_name=event_name, scope="acme")
    assert info.value.field == field, info.value.message
    assert info.value.message  # one readable line


def test_bad_arguments_raise_decode_error() -> None:
    payload = {"zen": "x", "repository": repo(), "sender": sender()}
    with pytest.raises(DecodeError, match="event_name"):
        github.to_events(payload, event_name="", scope="acme")
    with pytest.raises(DecodeError, match="delivery_id"):
        github.to_events(payload, event_name="ping", scope="acme", delivery_id="  ")
    with pytest.raises(DecodeError, match="scope"):
        github.to_events(payload, event_name="ping", scope="")
    with pytest.raises(DecodeError, match="timezone-aware"):
        github.to_events(
            {"sender": sender()}, event_name="ping", scope="acme", received_at=datetime(2024, 1, 1)
        )
