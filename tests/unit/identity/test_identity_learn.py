"""Joins learned from single events (pipeline/identity/learn.py)."""

from __future__ import annotations

from typing import Any

import pytest
from identity_helpers import envelope

from pipeline.identity import Join, learn, learn_all, make_join


def pairs(joins: list[Join]) -> set[tuple[str, str, str, str]]:
    return {(j.a, j.b, j.rule, j.assurance) for j in joins}


def push_payload(**over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ref": "refs/heads/main",
        "pusher": {"name": "Alice", "email": "alice@acme.io"},
        "sender": {"login": "alice", "type": "User"},
        "commits": [
            {
                "id": "a" * 40,
                "author": {"name": "Alice Ng", "email": "Alice@Acme.io", "username": "alice"},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            },
            # bob's commit, pushed by alice: no username -> GitHub did not match the e-mail
            {
                "id": "b" * 40,
                "author": {"name": "Bob", "email": "bob@acme.io"},
                "committer": {"name": "Bob", "email": "bob@acme.io"},
            },
        ],
        "head_commit": {"id": "b" * 40, "author": {"name": "Bob", "email": "bob@acme.io"}},
    }
    payload.update(over)
    return payload


def test_push_learns_commit_usernames_and_pusher_but_not_unmatched_authors() -> None:
    joins = learn(envelope("github://acme/api", push_payload(), actor_id="github:alice"))

    assert pairs(joins) == {
        ("git:alice@acme.io", "github:alice", "github.commit-username", "asserted-by-github"),
        ("git:alice@acme.io", "github:alice", "github.pusher", "asserted-by-github"),
    }
    principals = {p for j in joins for p in (j.a, j.b)}
    # never bob (pushed, not matched by GitHub), never web-flow's shared address, never names
    assert principals == {"git:alice@acme.io", "github:alice"}
    assert all(j.event_id == joins[0].event_id for j in joins)
    assert joins == sorted(joins)


def test_pusher_with_another_name_than_the_sender_is_not_joined() -> None:
    payload = push_payload(
        pusher={"name": "deploy-key", "email": "ops@acme.io"}, commits=[], head_commit=None
    )
    assert learn(envelope("github://acme/api", payload)) == []


def test_noreply_addresses_join_their_login_wherever_seen() -> None:
    payload = push_payload(
        pusher={"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
        sender={"login": "Codertocat"},
        commits=[{"author": {"name": "Codertocat", "email": "matfax@users.noreply.github.com"}}],
        head_commit=None,
    )
    assert pairs(learn(envelope("github://acme/api", payload))) == {
        (
            "git:21031067+codertocat@users.noreply.github.com",
            "github:codertocat",
            "github.pusher",
            "asserted-by-github",
        ),
        (
            "git:21031067+codertocat@users.noreply.github.com",
            "github:codertocat",
            "github.noreply-address",
            "asserted-by-github",
        ),
        (
            "git:matfax@users.noreply.github.com",
            "github:matfax",
            "github.noreply-address",
            "asserted-by-github",
        ),
    }
    # a git commit (any source) whose author uses a no-reply address
    ev = envelope(
        "git://repo",
        None,
        actor_id="git:7+dev@users.noreply.github.com",
        principal="7+Dev@users.noreply.github.com",
    )
    assert pairs(learn(ev)) == {
        ("git:7+dev@users.noreply.github.com", "github:dev", "github.noreply-address", "asserted-by-github")
    }


def test_status_payload_joins_commit_emails_with_api_users() -> None:
    payload = {
        "sha": "c" * 40,
        "commit": {
            "commit": {
                "author": {"name": "Carol", "email": "carol@acme.io"},
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
            },
            "author": {"login": "carol-c"},
            "committer": {"login": "web-flow"},
        },
        "sender": {"login": "ci-bot"},
    }
    assert pairs(learn(envelope("github://acme/api", payload))) == {
        ("git:carol@acme.io", "github:carol-c", "github.commit-user", "asserted-by-github")
    }


def test_head_commits_of_check_suites_and_runs() -> None:
    payload = {
        "check_suite": {"head_commit": {"author": {"email": "dan@acme.io", "username": "dan"}}},
        "workflow_run": {"head_commit": {"author": {"email": "erin@acme.io", "name": "Erin"}}},
        "sender": {"login": "dan"},
    }
    assert pairs(learn(envelope("github://acme/api", payload))) == {
        ("git:dan@acme.io", "github:dan", "github.commit-username", "asserted-by-github")
    }


def test_okta_actor_and_user_targets() -> None:
    record = {
        "actor": {
            "type": "User",
            "alternateId": "Alice@Acme.io",
            "id": "00u1abvz4pYqdM8ms4x6",
            "displayName": "A",
        },
        "target": [
            {"type": "User", "alternateId": "bob@acme.io", "id": "00u2bbbbbbbbbbbbbbbb"},
            {"type": "UserGroup", "alternateId": "admins", "id": "00g1aaaaaaaaaaaaaaaa"},
            {"type": "User", "alternateId": "placeholder@acme.io", "id": "user_id"},  # redacted log
        ],
    }
    assert pairs(learn(envelope("okta://acme", record, actor_id="okta:alice@acme.io"))) == {
        ("okta:00u1abvz4pYqdM8ms4x6", "okta:alice@acme.io", "okta.user-id", "asserted-by-okta"),
        ("okta:00u2bbbbbbbbbbbbbbbb", "okta:bob@acme.io", "okta.user-id", "asserted-by-okta"),
    }


def test_okta_system_principal_is_not_a_user() -> None:
    record = {
        "actor": {"type": "SystemPrincipal", "alternateId": "system@okta.com", "id": "00u1abvz4pYqdM8ms4x6"}
    }
    assert learn(envelope("okta://acme", record)) == []


def assume_role(identity: dict[str, Any], **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventName": "AssumeRole",
        "userIdentity": identity,
        "requestParameters": {"roleArn": "arn:aws:iam::1:role/Admin", "sourceIdentity": "alice"},
        "responseElements": {"sourceIdentity": "alice", "credentials": {"accessKeyId": "ASIA1"}},
    }
    record.update(over)
    return record


IAM_ALICE = {"type": "IAMUser", "arn": "arn:aws:iam::1:user/alice", "userName": "alice"}


def test_assume_role_setting_source_identity_is_a_claimed_join() -> None:
    joins = learn(envelope("cloudtrail://1/us-east-1", assume_role(IAM_ALICE)))
    assert pairs(joins) == {
        ("aws:arn:aws:iam::1:user/alice", "aws:source-identity:alice", "aws.source-identity", "claimed")
    }


@pytest.mark.parametrize(
    "record",
    [
        assume_role(IAM_ALICE, errorCode="AccessDenied"),
        assume_role(IAM_ALICE, requestParameters={}, responseElements={}),
        # a role session re-assuming: the source identity is inherited, its ARN names no person
        assume_role(
            {
                "type": "AssumedRole",
                "arn": "arn:aws:sts::1:assumed-role/Dev/cli",
                "principalId": "AROA1:cli",
                "sessionContext": {
                    "sourceIdentity": "alice",
                    "sessionIssuer": {"arn": "arn:aws:iam::1:role/Dev"},
                },
            }
        ),
        {
            "eventName": "GetCallerIdentity",
            "userIdentity": {
                "type": "AssumedRole",
                "arn": "arn:aws:sts::1:assumed-role/Dev/alice@acme.io",
                "principalId": "AROA1:alice@acme.io",
                "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::1:role/Dev"}},
            },
        },
    ],
)
def test_cloudtrail_records_that_prove_no_join(record: dict[str, Any]) -> None:
    assert learn(envelope("cloudtrail://1/us-east-1", record)) == []


def test_saml_source_identity_is_asserted_by_the_idp() -> None:
    record = {
        "eventName": "AssumeRoleWithSAML",
        "userIdentity": {"type": "SAMLUser", "userName": "Alice@Acme.io", "principalId": "x:Alice@Acme.io"},
        "responseElements": {"sourceIdentity": "alice"},
    }
    assert pairs(learn(envelope("cloudtrail://1/us-east-1", record))) == {
        (
            "aws-saml:alice@acme.io",
            "aws:source-identity:alice",
            "aws.saml-source-identity",
            "asserted-by-saml",
        )
    }


def test_identity_center_sessions_and_users() -> None:
    session = {
        "eventName": "RunInstances",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": "arn:aws:sts::1:assumed-role/AWSReservedSSO_Admin_0123/alice@acme.io",
            "principalId": "AROA1:alice@acme.io",
            "sessionContext": {
                "sessionIssuer": {
                    "arn": "arn:aws:iam::1:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123"
                }
            },
        },
    }
    user = {
        "eventName": "ListApplications",
        "userIdentity": {
            "type": "IdentityCenterUser",
            "userName": "alice@acme.io",
            "onBehalfOf": {"userId": "u-1", "identityStoreArn": "arn:aws:identitystore::1:identitystore/d-1"},
        },
    }
    joins = learn_all(
        [envelope("cloudtrail://1/us-east-1", session), envelope("cloudtrail://1/x", user, n=1)]
    )
    assert pairs(joins) == {
        (
            "aws-sso:alice@acme.io",
            "aws:arn:aws:sts::1:assumed-role/AWSReservedSSO_Admin_0123/alice@acme.io",
            "aws.sso-user",
            "asserted-by-aws",
        ),
        (
            "aws-identitycenter:arn:aws:identitystore::1:identitystore/d-1/u-1",
            "aws-sso:alice@acme.io",
            "aws.sso-user",
            "asserted-by-aws",
        ),
    }


def test_raw_of_other_sources_is_not_read_as_github() -> None:
    # a k8s audit record that happens to carry a GitHub-looking shape learns nothing
    ev = envelope("k8s-audit://c1", push_payload(), actor_id="k8s:alice", principal="k8s:alice")
    assert learn(ev) == []


def test_make_join_orders_normalises_and_refuses_nonsense() -> None:
    made = make_join(
        "github:Alice", "git:Alice@Acme.io", strength="asserted", system="github", rule="r", event_id="e"
    )
    assert made is not None
    assert (made.a, made.b) == ("git:alice@acme.io", "github:alice")
    assert (
        make_join("github:a", "GitHub:A", strength="asserted", system="github", rule="r", event_id="e")
        is None
    )
    assert (
        make_join("github:a", "git:A Name", strength="asserted", system="github", rule="r", event_id="e")
        is None
    )
    with pytest.raises(ValueError):
        make_join("github:a", "github:b", strength="maybe", system="x", rule="r", event_id="e")  # type: ignore[arg-type]


def test_learn_all_deduplicates_across_events() -> None:
    events = [envelope("github://acme/api", push_payload(), actor_id="github:alice", n=i) for i in range(3)]
    joins = learn_all(events + events)
    assert len(joins) == 6  # 2 joins x 3 distinct events, the repeats dropped
    assert joins == sorted(joins)
