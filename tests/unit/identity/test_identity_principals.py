"""The principal notation and the principals each source's actors stand for (pipeline/identity/principals.py)."""

from __future__ import annotations

import pytest

from pipeline.identity import github_login_of_noreply, normalize, principals_from, principals_of
from pipeline.model import Actor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github:Octocat", "github:octocat"),
        ("GitHub:octocat", "github:octocat"),
        ("git:Alice.Ng@Acme.IO", "git:alice.ng@acme.io"),
        ("okta:Alice@Acme.io", "okta:alice@acme.io"),
        ("okta:00u1abvz4pYqdM8ms4x6", "okta:00u1abvz4pYqdM8ms4x6"),  # ids keep their case
        ("arn:aws:iam::123456789012:user/Alice", "aws:arn:aws:iam::123456789012:user/Alice"),
        ("aws:arn:aws:iam::123456789012:user/Alice", "aws:arn:aws:iam::123456789012:user/Alice"),
        ("aws:source-identity:Alice@Acme.io", "aws:source-identity:alice@acme.io"),
        ("aws:source-identity:AliceNg", "aws:source-identity:AliceNg"),
        ("aws-sso:Alice@Acme.io", "aws-sso:alice@acme.io"),
        ("postgresql:db1:app", "postgres:db1:app"),
        ("postgres:alice", "postgres:alice"),
        ("k8s:system:serviceaccount:ns:deployer", "k8s:system:serviceaccount:ns:deployer"),
        ("k8s:Alice@Acme.io", "k8s:alice@acme.io"),
        ("os:Deploy@Web1.acme.io", "os:Deploy@Web1.acme.io"),  # user@host is not an e-mail
        ("  github:x  ", "github:x"),
    ],
)
def test_normalize_spellings(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice",  # no system: ambiguous
        "git:John Doe",  # names are never identities
        "git:unknown",
        "github:",
        "github:two words",
        "aws:anonymous",
        "aws:unknown:AIDAXYZ",
        "postgres:pg1:unknown",
        "k8s:system:anonymous",
        "debezium:dbserver1",
        "unknown",
        "okta:line\nbreak",
    ],
)
def test_normalize_rejects_what_names_nobody(text: str) -> None:
    assert normalize(text) is None


def test_noreply_addresses_name_their_login() -> None:
    assert github_login_of_noreply("21031067+Codertocat@users.noreply.github.com") == "codertocat"
    assert github_login_of_noreply("matfax@users.noreply.github.com") == "matfax"
    assert (
        github_login_of_noreply("41898282+github-actions[bot]@users.noreply.github.com")
        == "github-actions[bot]"
    )
    assert github_login_of_noreply("noreply@github.com") is None
    assert github_login_of_noreply("alice@users.noreply.github.com.evil.io") is None


# The actor shapes below are exactly those the normalizers in pipeline/sources write.


def test_github_actor() -> None:
    actor = Actor(
        id="github:Codertocat", principal="github:Codertocat", kind="human", assurance="authenticated"
    )
    assert principals_of(actor) == ("github:codertocat",)


def test_git_actor_bare_email_principal_and_name_only_author() -> None:
    actor = Actor(id="git:alice@acme.io", principal="Alice@Acme.io", kind="human", assurance="claimed")
    assert principals_of(actor) == ("git:alice@acme.io",)
    nameless = Actor(id="git:john doe", principal="John Doe", kind="human", assurance="claimed")
    assert principals_of(nameless) == ()


def test_config_file_actor_with_prefixed_principal() -> None:
    actor = Actor(id="git:alice@acme.io", principal="git:Alice@Acme.io", kind="human", assurance="claimed")
    assert principals_of(actor) == ("git:alice@acme.io",)


def test_cloudtrail_source_identity_comes_before_the_role_session() -> None:
    actor = Actor(
        id="aws:source-identity:alice",
        principal="arn:aws:sts::123456789012:assumed-role/Admin/cli",
        kind="human",
        assurance="authenticated",
    )
    assert principals_of(actor) == (
        "aws:source-identity:alice",
        "aws:arn:aws:sts::123456789012:assumed-role/Admin/cli",
    )


def test_cloudtrail_iam_user_and_service() -> None:
    user = Actor(
        id="arn:aws:iam::1:user/alice", principal="arn:aws:iam::1:user/alice", kind="human", assurance="mfa"
    )
    assert principals_of(user) == ("aws:arn:aws:iam::1:user/alice",)
    service = Actor(
        id="aws-service:ec2.amazonaws.com",
        principal="aws-service:ec2.amazonaws.com",
        kind="service",
        assurance="authenticated",
    )
    assert principals_of(service) == ("aws-service:ec2.amazonaws.com",)
    anonymous = Actor(id="aws:anonymous", principal="aws:anonymous", kind="unknown", assurance="none")
    assert principals_of(anonymous) == ()


def test_k8s_impersonation_puts_the_authenticated_user_first() -> None:
    actor = Actor(id="k8s:bob", principal="k8s:alice", kind="human", assurance="authenticated")
    assert principals_of(actor) == ("k8s:alice", "k8s:bob")


def test_postgres_actor_gives_server_role_then_any_server_role() -> None:
    actor = Actor(id="postgres:pg1:alice", principal="alice", kind="unknown", assurance="authenticated")
    assert principals_of(actor) == ("postgres:pg1:alice", "postgres:alice")
    unknown = Actor(id="postgres:pg1:unknown", kind="unknown", assurance="none")
    assert principals_of(unknown) == ()


def test_debezium_actor() -> None:
    actor = Actor(id="postgresql:dbserver1:app", principal="app", kind="unknown", assurance="claimed")
    assert principals_from(actor.id, actor.principal) == ("postgres:dbserver1:app", "postgres:app")
    assert principals_from("debezium:dbserver1") == ()


def test_okta_and_terraform_actors() -> None:
    okta = Actor(id="okta:Alice@Acme.io", principal="okta:Alice@Acme.io", kind="human", assurance="mfa")
    assert principals_of(okta) == ("okta:alice@acme.io",)
    assert principals_from("unknown", "") == ()
