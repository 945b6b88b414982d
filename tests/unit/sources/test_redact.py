"""Secret redaction (pipeline/sources/redact.py): secrets found, non-secrets kept, hashes stable."""

from __future__ import annotations

import copy
import hashlib

import pytest
from keyed_helpers import marker

from pipeline.sources.redact import (
    MARKER_PREFIX,
    is_marker,
    is_secret_key,
    looks_like_credential,
    redact,
    redact_text,
    redact_value,
)

# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password", "PASSWORD", "db_password", "dbPassword", "DB-PASSWORD", "passwd", "pwd",
        "passphrase", "secret", "client_secret", "clientSecret", "secrets", "token", "access_token",
        "sessionToken", "session_token", "GITHUB_TOKEN", "api_key", "apiKey", "X-Api-Key",
        "private_key", "privateKey", "access_key", "secret_access_key", "AWS_SECRET_ACCESS_KEY",
        "aws_access_key_id", "credential", "credentials", "cookie", "Set-Cookie", "auth",
        "basic_auth", "Authorization", "proxy-authorization", "dsn", "sentry_dsn",
        "connection_string", "ConnectionString", "password_hash", "secret_value", "token_b64",
        "private", "authtoken", "dbpassword", "sensitive_content",
    ],
)  # fmt: skip
def test_secret_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "keyboard", "monkey", "key", "Key", "keys", "key_name", "keyId", "sort_key", "hash_key",
        "primary_key", "public_key", "ssh_key", "kms_key_id", "instance_key", "tag_key",
        "password_policy", "passwordResetRequired", "secret_name", "secretName", "secretKeyRef",
        "secret_scanning", "token_type", "token_ttl", "next_token", "nextToken", "clientToken",
        "author", "author_association", "authorized_actor_names", "authorization.k8s.io/decision",
        "private_ip", "privacy", "privileged", "credit_specification", "credential_type",
        "pushed_at", "sha", "id", "name", "", "api_key_name", "private_key_path",
    ],
)  # fmt: skip
def test_non_secret_keys(name: str) -> None:
    assert not is_secret_key(name)


# --- values ----------------------------------------------------------------------------------

CREDENTIALS = [
    "AKIAIOSFODNN7EXAMPLE",
    "ASIA5FLZVX4OAET5K4P5",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "ghs_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx...\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    "postgres://app:s3cr3t-pw@db.internal:5432/orders",
    "https://deploy:hunter2@registry.example.com/v2/",
    "Server=db;Database=orders;User Id=sa;Password=Hunter2!;",
    "Authorization: Bearer abcdefghijklmnop.qrstuvwx",
    "q8XyZ2vN7rT4mK9pL3sW6dF1gH5jB0cA",  # random, high entropy
    "export DB_PASSWORD=correct-horse-battery",
    "https://hooks.example.com/notify?token=abc123def456&channel=ops",
]


@pytest.mark.parametrize("value", CREDENTIALS)
def test_credentials_are_recognised_and_hidden(value: str) -> None:
    assert looks_like_credential(value)
    assert redact_text(value) != value
    assert MARKER_PREFIX in redact(value)


@pytest.mark.parametrize(
    "value", [c for c in CREDENTIALS if " " not in c and "=" not in c and "://" not in c]
)
def test_credential_shapes_are_found_inside_prose(value: str) -> None:
    text = f"rotated the old one ({value}) after the incident"
    out = redact_text(text)
    if value.startswith(("q8Xy", "wJalr")):  # entropy and AWS-secret shapes apply to whole values only
        assert out == text
        return
    assert value not in out
    assert out.startswith("rotated the old one (redacted:hmac-sha256:v1:") and out.endswith(") after the incident")


NON_SECRETS = [
    "6113728f27ae82c7b1a177c8d03f9e96e0adf246",  # git sha
    "f95f852bd8fca8fcc58a9a2d6c842781e32a215ef95f852bd8fca8fcc58a9a2d",  # sha256
    "9a2bb12c-b9f7-4d34-809c-671e8c7e1e06",  # uuid
    "https://api.github.com/repos/Codertocat/Hello-World/pulls/2",
    "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000",
    "2019-05-15T15:20:57Z",
    "2018-10-26T09:51:20.713631Z",
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/api/v1/namespaces/default/pods/nginx-7998647bdf-phvq7/exec?command=bash&container=nginx1",
    "21031067+Codertocat@users.noreply.github.com",
    "arn:aws:iam::123456789012:role/MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0",
    "MordorNginxStack-BankingWAFRole-9S3E0UAE1MM0",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
    "UpdateFunctionConfiguration20150331v2",
    "nginx-deployment-7998647bdf-phvq7",
    "k8s.gcr.io/kube-apiserver:v1.13.0",
    "registry.terraform.io/hashicorp/null",
    'module.files.local_file.foo["file1.txt"]',
    "color.good=purple\ncolor.bad=yellow\nallow.textmode=true\n",
    "Update the README with new information.",
    "-----BEGIN PGP SIGNATURE-----\n\nwsBcBAABCAAQBQJc3C39CRBK7hj4Ov3rIwAAdHIIABvaC0PQWgtUDQ5cz8ISR/Gf\n-----END PGP SIGNATURE-----\n",
    "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC8 octocat@octomac",
    "********",
    "",
]


@pytest.mark.parametrize("value", NON_SECRETS)
def test_non_secrets_are_kept(value: str) -> None:
    assert not looks_like_credential(value)
    assert redact(value) == value


def test_marker_is_the_keyed_hash_of_the_value_with_its_format_version() -> None:
    assert redact_value("hunter2") == marker("hunter2")
    assert MARKER_PREFIX == "redacted:hmac-sha256:v1:" and len(marker("hunter2")) == len(MARKER_PREFIX) + 32
    assert redact_value(1234) == marker(b"1234")
    assert redact_value({"b": 1, "a": 2}) == redact_value({"a": 2, "b": 1})  # canonical JSON
    assert is_marker(redact_value("x")) and not is_marker("redacted:hmac-sha256:v1:xyz")
    # the plain, unkeyed marker of the former format is not a marker: it would be kept verbatim
    assert not is_marker("redacted:sha256:" + hashlib.sha256(b"x").hexdigest()[:16])


def test_inline_matches_keep_the_rest_of_the_text() -> None:
    text = "aws_access_key_id = MY-ID\naws_secret_access_key = MY-KEY\nregion = eu-west-1\n"
    out = redact_text(text)
    assert (
        out
        == f"aws_access_key_id = {marker('MY-ID')}\naws_secret_access_key = {marker('MY-KEY')}\nregion = eu-west-1\n"
    )
    assert redact_text("postgres://app:pw@db:5432/x") == f"postgres://app:{marker('pw')}@db:5432/x"
    assert (
        redact_text("Authorization: Bearer abcdefghijkl") == f"Authorization: Bearer {marker('abcdefghijkl')}"
    )
    assert (
        redact_text('{"password":"c2VjcmV0","user":"bob"}')
        == f'{{"password":"{marker("c2VjcmV0")}","user":"bob"}}'
    )


def test_structures_are_redacted_by_key_and_by_shape() -> None:
    doc = {
        "db": {"host": "db.internal", "password": "hunter2", "port": 5432},
        "apiKey": "k-123",
        "private": False,
        "token": None,
        "env": [{"name": "DB_PASSWORD", "value": "pw1"}, {"name": "LOG_LEVEL", "value": "debug"}],
        "notes": ["deploy with ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "plain"],
        "volumes": [{"name": "creds", "secret": {"secretName": "db-creds", "defaultMode": 420}}],
        "credentials": {"user": "bob", "pass": "p4ss", "expiration": "2024-01-01T00:00:00Z"},
        "permissions": {"secrets": "write", "contents": "read"},
        "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
        "keyboard": "qwerty",
    }
    original = copy.deepcopy(doc)
    out = redact(doc)

    assert doc == original  # a new structure, the input untouched
    assert out["db"] == {"host": "db.internal", "password": marker("hunter2"), "port": 5432}
    assert out["apiKey"] == marker("k-123")
    assert out["private"] is False and out["token"] is None
    assert out["env"] == [
        {"name": "DB_PASSWORD", "value": marker("pw1")},
        {"name": "LOG_LEVEL", "value": "debug"},
    ]
    assert out["notes"][0].startswith("deploy with redacted:hmac-sha256:v1:") and out["notes"][1] == "plain"
    assert out["volumes"] == original["volumes"]  # a reference to a secret is not a secret
    # in secret context only reference-like keys (user, name, kind, expiration...) stay readable
    assert out["credentials"]["user"] == "bob" and out["credentials"]["pass"] == marker("p4ss")
    assert out["credentials"]["expiration"] == "2024-01-01T00:00:00Z"
    assert out["permissions"] == {"secrets": "write", "contents": "read"}
    assert out["node_id"] == original["node_id"]  # identifier key: no entropy guess
    assert out["keyboard"] == "qwerty"


def test_redaction_is_deterministic_and_idempotent() -> None:
    doc = {"password": "a", "nested": [{"client_secret": "b"}, "AKIAIOSFODNN7EXAMPLE"], "n": 1}
    once = redact(doc)
    assert redact(doc) == once
    assert redact(once) == once
    # a changed secret changes its marker: the change stays visible
    assert redact({"password": "a2"})["password"] != once["password"]


def test_key_context_for_a_bare_value() -> None:
    assert redact("hunter2", key="password") == marker("hunter2")
    assert redact("hunter2", key="username") == "hunter2"
    assert redact(42, key="pin_code") == 42
    assert redact(1234, key="password") == redact_value(1234)
