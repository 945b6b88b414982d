"""CloudTrail normalizer: role chains, identity types, types and outcomes (synthetic records)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.model import Event, decode, encode
from pipeline.sources import cloudtrail

ACCOUNT = "111122223333"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
# Temporary keys: alice's MFA session (GetSessionToken), then the two role sessions.
ASIA0 = "ASIAALICEMFASESSION0"
ASIA1 = "ASIAROLEADEPLOYER001"
ASIA2 = "ASIAROLEBPRODADMIN02"
TOKEN = "IQoJb3JpZ2luX2VjEGYaCXVzLWVhc3QtMSJGMEQCIGWKgbykBmpvw3C2tHFJG2Z2EFmm8TFxSMzImeEIU"


def _record(name: str, source: str, identity: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "eventVersion": "1.09",
        "eventID": f"evt-{name}-{identity.get('accessKeyId', identity.get('type'))}",
        "eventName": name,
        "eventSource": source,
        "eventTime": "2024-05-01T10:00:00Z",
        "eventType": "AwsApiCall",
        "awsRegion": "eu-west-1",
        "recipientAccountId": ACCOUNT,
        "requestID": f"req-{name}-{identity.get('accessKeyId', 'x')}",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15",
        "userIdentity": identity,
        "requestParameters": None,
        "responseElements": None,
    }
    rec.update(extra)
    return rec


def _alice(mfa: bool = True, key: str = ASIA0) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "type": "IAMUser",
        "principalId": "AIDAALICE",
        "arn": ALICE_ARN,
        "accountId": ACCOUNT,
        "accessKeyId": key,
        "userName": "alice",
    }
    if key.startswith("ASIA"):
        identity["sessionContext"] = {
            "attributes": {"creationDate": "2024-05-01T09:00:00Z", "mfaAuthenticated": str(mfa).lower()}
        }
    return identity


def _role_session(role: str, key: str, *, source_identity: str | None, mfa: bool) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "attributes": {"creationDate": "2024-05-01T10:00:00Z", "mfaAuthenticated": str(mfa).lower()},
        "sessionIssuer": {
            "type": "Role",
            "principalId": f"AROA{role.upper()}",
            "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
            "accountId": ACCOUNT,
            "userName": role,
        },
    }
    if source_identity:
        ctx["sourceIdentity"] = source_identity
    return {
        "type": "AssumedRole",
        "principalId": f"AROA{role.upper()}:alice-session",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/alice-session",
        "accountId": ACCOUNT,
        "accessKeyId": key,
        "sessionContext": ctx,
    }


def _assume(identity: dict[str, Any], role: str, new_key: str, source_identity: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
        "roleSessionName": "alice-session",
    }
    response: dict[str, Any] = {
        "credentials": {
            "accessKeyId": new_key,
            "sessionToken": TOKEN,
            "expiration": "May 1, 2024, 11:00:00 AM",
        },
        "assumedRoleUser": {
            "assumedRoleId": f"AROA{role.upper()}:alice-session",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/alice-session",
        },
    }
    if source_identity:
        params["sourceIdentity"] = source_identity
        response["sourceIdentity"] = source_identity
    return _record(
        "AssumeRole",
        "sts.amazonaws.com",
        identity,
        requestParameters=params,
        responseElements=response,
        readOnly=True,
    )


def _chain(*, source_identity: str | None, alice_key: str = ASIA0) -> list[Event]:
    step1 = _assume(_alice(key=alice_key), "deployer", ASIA1, source_identity)
    step2 = _assume(
        _role_session("deployer", ASIA1, source_identity=source_identity, mfa=True), "prod-admin", ASIA2, None
    )
    step3 = _record(
        "DeleteBucket",
        "s3.amazonaws.com",
        _role_session("prod-admin", ASIA2, source_identity=source_identity, mfa=False),
        requestParameters={"bucketName": "prod-invoices"},
    )
    return [cloudtrail.to_events(r, scope="acme")[0] for r in (step1, step2, step3)]


def _components(events: list[Event]) -> list[set[str]]:
    """Connected components of events sharing a link key (DESIGN.md §3)."""
    parent = {e.id: e.id for e in events}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    by_key: dict[str, str] = {}
    for e in events:
        for key in e.links:
            if key in by_key:
                parent[find(e.id)] = find(by_key[key])
            else:
                by_key[key] = e.id
    groups: dict[str, set[str]] = {}
    for e in events:
        groups.setdefault(find(e.id), set()).add(e.id)
    return list(groups.values())


# --------------------------------------------------------------------------------------------
# role chain


def test_role_chain_shares_session_keys_pairwise_and_is_one_chain() -> None:
    first, second, call = _chain(source_identity="alice")
    assert f"session:aws:{ASIA0}" in first.links and f"session:aws:{ASIA1}" in first.links
    assert f"session:aws:{ASIA1}" in second.links and f"session:aws:{ASIA2}" in second.links
    assert f"session:aws:{ASIA2}" in call.links
    assert f"session:aws:{ASIA0}" not in second.links and f"session:aws:{ASIA1}" not in call.links
    assert _components([first, second, call]) == [{first.id, second.id, call.id}]
    assert first.type == second.type == "iam.role.assumed"
    assert first.subject == f"session:aws:{ASIA1}" and second.subject == f"session:aws:{ASIA2}"
    for event in (first, second, call):
        assert decode(encode(event)) == event
        assert TOKEN not in encode(event).decode()


def test_final_call_resolves_to_alice_through_source_identity_and_the_chain() -> None:
    first, second, call = _chain(source_identity="alice")
    # (1) the record itself names the person: sourceIdentity propagates through role chaining
    assert call.actor.id == "aws:source-identity:alice"
    assert call.actor.display == "alice" and call.actor.kind == "human"
    assert call.actor.principal == f"arn:aws:sts::{ACCOUNT}:assumed-role/prod-admin/alice-session"
    # assurance is what this record proves: the last role session was not MFA-authenticated
    assert call.actor.assurance == "authenticated"
    # (2) the chain of issued sessions leads to the IAM user, whose session was MFA-authenticated
    steps = cloudtrail.resolve_origin([call, second, first], call)
    assert [s["event"] for s in steps] == [call.id, second.id, first.id]
    assert steps[-1]["actor"] == ALICE_ARN and steps[-1]["assurance"] == "mfa"
    assert steps[0]["session"] == f"session:aws:{ASIA2}"
    issued = first.diff["session_issued"]
    assert issued["session"] == f"session:aws:{ASIA1}"
    assert issued["source_identity"] == "alice"
    assert issued["issued_to"] == {
        "actor": ALICE_ARN,
        "principal": ALICE_ARN,
        "session": f"session:aws:{ASIA0}",
        "assurance": "mfa",
    }
    assert first.actor.assurance == "mfa" and first.actor.kind == "human"
    assert second.actor.id == "aws:source-identity:alice" and second.actor.assurance == "mfa"
    assert second.diff["session_issued"]["issued_to"]["session"] == f"session:aws:{ASIA1}"


def test_without_source_identity_the_chain_still_names_alice() -> None:
    first, second, call = _chain(source_identity=None)
    assert call.actor.id == f"arn:aws:sts::{ACCOUNT}:assumed-role/prod-admin/alice-session"
    assert call.actor.display == "prod-admin/alice-session"
    steps = cloudtrail.resolve_origin([first, second, call], call)
    assert steps[-1]["actor"] == ALICE_ARN
    assert _components([first, second, call]) == [{first.id, second.id, call.id}]


def test_long_term_keys_are_not_sessions_unless_asked() -> None:
    first, second, call = _chain(source_identity="alice", alice_key="AKIAALICELONGTERM001")
    assert not any(k.startswith("session:aws:AKIA") for k in first.links)
    assert _components([first, second, call]) == [{first.id, second.id, call.id}]
    assert cloudtrail.resolve_origin([first, second, call], call)[-1]["actor"] == ALICE_ARN
    record = _assume(_alice(key="AKIAALICELONGTERM001"), "deployer", ASIA1, None)
    (linked,) = cloudtrail.to_events(record, scope="acme", link_long_term_keys=True)
    assert "session:aws:AKIAALICELONGTERM001" in linked.links


def test_failed_assume_role_issues_nothing() -> None:
    record = _assume(_alice(), "deployer", ASIA1, None)
    record.update(errorCode="AccessDenied", errorMessage="not authorized", responseElements=None)
    (event,) = cloudtrail.to_events(record, scope="acme")
    assert event.outcome == "failure" and event.diff is None and event.subject is None
    assert event.links == (f"session:aws:{ASIA0}", f"request:{record['requestID']}")


def test_get_session_token_and_federation_token_issue_sessions() -> None:
    for name, type_ in (
        ("GetSessionToken", "iam.session_token.issued"),
        ("GetFederationToken", "iam.federation_token.issued"),
    ):
        record = _record(
            name,
            "sts.amazonaws.com",
            _alice(key="AKIAALICELONGTERM001"),
            requestParameters={"name": "fed"} if name == "GetFederationToken" else {"durationSeconds": 900},
            responseElements={"credentials": {"accessKeyId": ASIA1, "sessionToken": TOKEN}},
        )
        (event,) = cloudtrail.to_events(record, scope="acme")
        assert event.type == type_ and f"session:aws:{ASIA1}" in event.links
        assert event.diff["session_issued"]["session"] == f"session:aws:{ASIA1}"


# --------------------------------------------------------------------------------------------
# identity types

IDENTITIES: list[tuple[dict[str, Any], str, str, str, bool]] = [
    # (userIdentity, actor id, kind, assurance, verified)
    (
        {
            "type": "Root",
            "principalId": ACCOUNT,
            "arn": f"arn:aws:iam::{ACCOUNT}:root",
            "accountId": ACCOUNT,
            "sessionContext": {"attributes": {"mfaAuthenticated": "true"}},
        },
        f"arn:aws:iam::{ACCOUNT}:root",
        "human",
        "mfa",
        True,
    ),
    (_alice(mfa=False), ALICE_ARN, "unknown", "authenticated", True),
    (_alice(mfa=True), ALICE_ARN, "human", "mfa", True),
    (
        _role_session("ci", "ASIACIROLESESSION001", source_identity=None, mfa=False),
        f"arn:aws:sts::{ACCOUNT}:assumed-role/ci/alice-session",
        "unknown",
        "authenticated",
        True,
    ),
    (
        _role_session("ci", "ASIACIROLESESSION001", source_identity="bob@example.com", mfa=True),
        "aws:source-identity:bob@example.com",
        "human",
        "mfa",
        True,
    ),
    (
        {
            "type": "FederatedUser",
            "principalId": f"{ACCOUNT}:fed",
            "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/fed",
            "accountId": ACCOUNT,
            "accessKeyId": "ASIAFEDERATED0000001",
            "sessionContext": {
                "attributes": {"mfaAuthenticated": "false"},
                "sessionIssuer": {"type": "IAMUser", "userName": "broker"},
            },
        },
        f"arn:aws:sts::{ACCOUNT}:federated-user/fed",
        "unknown",
        "authenticated",
        True,
    ),
    (
        {"type": "AWSService", "invokedBy": "cloudformation.amazonaws.com"},
        "aws-service:cloudformation.amazonaws.com",
        "service",
        "authenticated",
        True,
    ),
    (
        {
            "type": "IdentityCenterUser",
            "accountId": ACCOUNT,
            "onBehalfOf": {
                "userId": "544894e8-80c1-707f-60e3-3ba6510dfac1",
                "identityStoreArn": "arn:aws:identitystore::111122223333:identitystore/d-9067642ac7",
            },
            "credentialId": "EXAMPLEVHULjJdTUdPJfofVa1sufHDoj7aYcOYcxFVllWR",
        },
        "aws-identitycenter:arn:aws:identitystore::111122223333:identitystore/d-9067642ac7/544894e8-80c1-707f-60e3-3ba6510dfac1",
        "human",
        "authenticated",
        True,
    ),
    (
        {"type": "AWSAccount", "principalId": "AIDACROSSACCOUNT", "accountId": "444455556666"},
        "aws-account:444455556666",
        "unknown",
        "authenticated",
        True,
    ),
    (
        {"type": "AWSAccount", "principalId": "", "accountId": "ANONYMOUS_PRINCIPAL"},
        "aws:anonymous",
        "unknown",
        "none",
        False,
    ),
    (
        {
            "type": "Unknown",
            "principalId": "",
            "accountId": ACCOUNT,
            "userName": "HIDDEN_DUE_TO_SECURITY_REASONS",
        },
        "aws:unknown:HIDDEN_DUE_TO_SECURITY_REASONS",
        "unknown",
        "none",
        False,
    ),
]


@pytest.mark.parametrize(
    ("identity", "actor_id", "kind", "assurance", "verified"), IDENTITIES, ids=lambda v: str(v)[:40]
)
def test_every_user_identity_type(
    identity: dict[str, Any], actor_id: str, kind: str, assurance: str, verified: bool
) -> None:
    record = _record("ListBuckets", "s3.amazonaws.com", copy.deepcopy(identity))
    (event,) = cloudtrail.to_events(record, scope="acme")
    assert (event.actor.id, event.actor.kind, event.actor.assurance, event.actor.verified) == (
        actor_id,
        kind,
        assurance,
        verified,
    )
    assert event.actor.principal
    assert event.type == "aws.s3.list_buckets.read"


def test_missing_user_identity_is_unknown() -> None:
    record = _record("ListBuckets", "s3.amazonaws.com", {})
    del record["userIdentity"]
    (event,) = cloudtrail.to_events(record, scope="acme")
    assert event.actor.id == "aws:unknown:unknown" and event.actor.assurance == "none"


# --------------------------------------------------------------------------------------------
# types, outcomes, targets


@pytest.mark.parametrize(
    ("source", "name", "read_only", "type_"),
    [
        ("cloudtrail.amazonaws.com", "StopLogging", False, "config.audit.disabled"),
        ("cloudtrail.amazonaws.com", "DeleteTrail", False, "config.audit.disabled"),
        ("cloudtrail.amazonaws.com", "StartLogging", False, "config.audit.enabled"),
        ("cloudtrail.amazonaws.com", "PutEventSelectors", False, "config.audit.changed"),
        ("cloudtrail.amazonaws.com", "DescribeTrails", True, "aws.cloudtrail.describe_trails.read"),
        ("organizations.amazonaws.com", "LeaveOrganization", False, "access.org.leave_organization"),
        ("organizations.amazonaws.com", "ListAccounts", True, "aws.organizations.list_accounts.read"),
        ("iam.amazonaws.com", "CreateUser", False, "iam.user.created"),
        ("iam.amazonaws.com", "AttachRolePolicy", False, "iam.role_policy.attached"),
        ("iam.amazonaws.com", "UpdateAssumeRolePolicy", False, "iam.assume_role_policy.updated"),
        ("iam.amazonaws.com", "GetUser", True, "iam.user.read"),
        ("iam.amazonaws.com", "ListUsers", None, "iam.users.read"),
        ("sts.amazonaws.com", "AssumeRole", True, "iam.role.assumed"),
        ("sts.amazonaws.com", "AssumeRoleWithWebIdentity", True, "iam.role.assumed"),
        ("sts.amazonaws.com", "GetCallerIdentity", True, "iam.sts.get_caller_identity.read"),
        ("signin.amazonaws.com", "ConsoleLogin", False, "iam.login"),
        ("ec2.amazonaws.com", "RunInstances", False, "aws.ec2.run_instances"),
        ("ec2.amazonaws.com", "DescribeInstances", None, "aws.ec2.describe_instances.read"),
        ("ec2.amazonaws.com", "DeleteFlowLogs", False, "config.audit.disabled"),
        ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", False, "aws.lambda.update_function_code"),
    ],
)
def test_types(source: str, name: str, read_only: bool | None, type_: str) -> None:
    record = _record(name, source, _alice(mfa=False))
    if read_only is not None:
        record["readOnly"] = read_only
    (event,) = cloudtrail.to_events(record, scope="acme")
    assert event.type == type_
    assert event.action == name


def test_console_login_outcome_and_assurance() -> None:
    identity = {
        "type": "IAMUser",
        "principalId": "AIDAALICE",
        "arn": ALICE_ARN,
        "accountId": ACCOUNT,
        "userName": "alice",
    }
    ok = _record(
        "ConsoleLogin",
        "signin.amazonaws.com",
        identity,
        responseElements={"ConsoleLogin": "Success"},
        additionalEventData={"MFAUsed": "Yes"},
    )
    (event,) = cloudtrail.to_events(ok, scope="acme")
    assert (event.type, event.outcome, event.actor.assurance, event.actor.kind) == (
        "iam.login",
        "success",
        "mfa",
        "human",
    )
    assert event.target.kind == "aws.console"
    bad = dict(ok, responseElements={"ConsoleLogin": "Failure"}, errorMessage="Failed authentication")
    (event,) = cloudtrail.to_events(bad, scope="acme")
    assert (event.outcome, event.actor.assurance, event.actor.verified) == ("failure", "claimed", False)


def test_targets() -> None:
    cases = [
        (
            "StopLogging",
            "cloudtrail.amazonaws.com",
            {"name": "arn:aws:cloudtrail:eu-west-1:111122223333:trail/main"},
            ("aws.cloudtrail.trail", "arn:aws:cloudtrail:eu-west-1:111122223333:trail/main", "main"),
        ),
        (
            "CreateUser",
            "iam.amazonaws.com",
            {"userName": "eve"},
            ("aws.iam.user", f"arn:aws:iam::{ACCOUNT}:user/eve", "eve"),
        ),
        (
            "StopInstances",
            "ec2.amazonaws.com",
            {"instancesSet": {"items": [{"instanceId": "i-0123456789abcdef0"}]}},
            (
                "aws.ec2.instance",
                f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-0123456789abcdef0",
                "i-0123456789abcdef0",
            ),
        ),
        ("ListBuckets", "s3.amazonaws.com", None, ("aws.service", "s3.amazonaws.com", "s3")),
    ]
    for name, source, params, expected in cases:
        (event,) = cloudtrail.to_events(
            _record(name, source, _alice(), requestParameters=params), scope="acme"
        )
        assert (event.target.kind, event.target.id, event.target.name) == expected
    with_resources = _record(
        "GetObject",
        "s3.amazonaws.com",
        _alice(),
        resources=[{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::b/k.txt"}],
    )
    (event,) = cloudtrail.to_events(with_resources, scope="acme")
    assert (event.target.kind, event.target.id) == ("aws.s3.object", "arn:aws:s3:::b/k.txt")


def test_error_code_is_failure_and_time_falls_back_to_logstash_timestamp() -> None:
    record = _record("RunInstances", "ec2.amazonaws.com", _alice(), errorCode="Client.UnauthorizedOperation")
    del record["eventTime"]
    record["@timestamp"] = "2020-09-14T00:44:23.000Z"
    (event,) = cloudtrail.to_events(record, scope="acme")
    assert event.outcome == "failure"
    assert event.time.isoformat() == "2020-09-14T00:44:23+00:00"
    assert event.id == cloudtrail.to_events(copy.deepcopy(record), scope="acme")[0].id


def test_iter_records_shapes() -> None:
    one = _record("ListBuckets", "s3.amazonaws.com", _alice())
    assert cloudtrail.iter_records({"Records": [one, one]}) == [one, one]
    assert cloudtrail.iter_records([one]) == [one]
    assert cloudtrail.iter_records(one) == [one]
    assert cloudtrail.iter_records({"Records": None}) == []
    with pytest.raises(DecodeError) as err:
        cloudtrail.iter_records({"Records": [one, 3]})
    assert err.value.field == "$.Records[1]"


def test_malformed_records_raise_decode_errors_naming_the_field() -> None:
    record = _record("ListBuckets", "s3.amazonaws.com", _alice())
    for field, value, path in (
        ("eventID", None, "$.eventID"),
        ("eventName", 5, "$.eventName"),
        ("userIdentity", "alice", "$.userIdentity"),
    ):
        bad = dict(record, **{field: value})
        with pytest.raises(DecodeError) as err:
            cloudtrail.to_events(bad, scope="acme")
        assert err.value.field == path
    with pytest.raises(DecodeError):
        cloudtrail.to_events(dict(record, eventTime="yesterday"), scope="acme")
    with pytest.raises(DecodeError):
        cloudtrail.to_events(["not", "a", "record"], scope="acme")
