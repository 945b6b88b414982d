"""Okta System Log normalizer (synthetic events shaped like the System Log API's)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.model import decode, encode
from pipeline.sources import okta


def _event(event_type: str, result: str = "SUCCESS", **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "uuid": f"uuid-{event_type}-{result}",
        "published": "2024-05-01T10:00:00.123Z",
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "displayMessage": "x",
        "actor": {"id": "00u1", "type": "User", "alternateId": "alice@example.com", "displayName": "Alice"},
        "authenticationContext": {"externalSessionId": "102abcSESSION", "authenticationProvider": None},
        "debugContext": {"debugData": {"requestId": "REQ1"}},
        "transaction": {"type": "WEB", "id": "REQ1"},
        "outcome": {"result": result, "reason": None},
        "target": None,
    }
    ev.update(extra)
    return ev


@pytest.mark.parametrize(
    ("event_type", "type_"),
    [
        ("user.session.start", "iam.login"),
        ("user.session.end", "iam.logout"),
        ("user.authentication.auth_via_mfa", "iam.mfa.verified"),
        ("user.authentication.verify", "iam.auth.verified"),
        ("group.user_membership.add", "access.group.member_added"),
        ("group.user_membership.remove", "access.group.member_removed"),
        ("application.user_membership.add", "access.app.user_assigned"),
        ("user.account.privilege.grant", "access.admin.granted"),
        ("user.lifecycle.deactivate", "iam.user.deactivate"),
        ("user.mfa.factor.deactivate", "iam.mfa.factor_deactivate"),
        ("policy.rule.update", "config.okta.policy_rule.update"),
        ("policy.evaluate_sign_on", "iam.okta.policy.evaluate_sign_on"),
        ("app.user_management", "iam.okta.app.user_management"),
    ],
)
def test_types(event_type: str, type_: str) -> None:
    (event,) = okta.to_events(_event(event_type), scope="acme")
    assert event.type == type_ and event.action == event_type
    assert decode(encode(event)) == event


def test_login_links_actor_and_target() -> None:
    (event,) = okta.to_events(_event("user.session.start"), scope="acme", org="acme.okta.com")
    assert event.links == ("session:okta:102abcSESSION", "request:REQ1")
    assert event.actor.id == "okta:alice@example.com" and event.actor.kind == "human"
    assert event.actor.assurance == "authenticated" and event.actor.verified
    assert (event.target.kind, event.target.id) == ("okta.org", "acme.okta.com")
    assert event.source == "okta://acme.okta.com"


def test_mfa_raises_assurance_and_failures_are_claimed() -> None:
    (mfa,) = okta.to_events(_event("user.authentication.auth_via_mfa"), scope="acme")
    assert mfa.actor.assurance == "mfa"
    factor = _event(
        "user.authentication.sso", debugContext={"debugData": {"requestId": "R", "factor": "FIDO_WEBAUTHN"}}
    )
    assert okta.to_events(factor, scope="acme")[0].actor.assurance == "mfa"
    (failed,) = okta.to_events(_event("user.authentication.auth_via_mfa", "FAILURE"), scope="acme")
    assert failed.outcome == "failure" and failed.actor.assurance == "claimed" and not failed.actor.verified
    (denied,) = okta.to_events(_event("policy.evaluate_sign_on", "DENY"), scope="acme")
    assert denied.outcome == "failure"
    (challenge,) = okta.to_events(_event("policy.evaluate_sign_on", "CHALLENGE"), scope="acme")
    assert challenge.outcome == "unknown"


def test_group_membership_targets_the_group_with_the_user_as_subject() -> None:
    targets = [
        {"id": "00uBOB", "type": "User", "alternateId": "bob@example.com", "displayName": "Bob"},
        {"id": "00gADMINS", "type": "UserGroup", "alternateId": "unknown", "displayName": "Admins"},
    ]
    (event,) = okta.to_events(_event("group.user_membership.add", target=targets), scope="acme")
    assert (event.target.kind, event.target.id, event.target.name) == (
        "okta.usergroup",
        "00gADMINS",
        "Admins",
    )
    assert event.subject == "bob@example.com"


def test_system_principal_is_a_service_and_placeholders_are_not_linked() -> None:
    ev = _event(
        "app.user_management",
        actor={
            "id": "spr1",
            "type": "SystemPrincipal",
            "alternateId": "system@okta.com",
            "displayName": "Okta System",
        },
        authenticationContext={"externalSessionId": "unknown"},
        debugContext={"debugData": {}},
        transaction={"type": "JOB", "id": "JOB1"},
    )
    (event,) = okta.to_events(ev, scope="acme")
    assert event.actor.kind == "service" and event.links == ("request:JOB1",)


def test_ids_are_deterministic_and_content_sensitive() -> None:
    a = okta.to_events(_event("user.session.start"), scope="acme")[0]
    b = okta.to_events(_event("user.session.start"), scope="other")[0]
    c = okta.to_events(_event("user.session.start", published="2024-05-01T10:00:01.000Z"), scope="acme")[0]
    assert a.id == b.id and a.id != c.id


def test_malformed() -> None:
    for field in ("eventType", "uuid", "actor"):
        bad = _event("user.session.start")
        del bad[field]
        with pytest.raises(DecodeError) as err:
            okta.to_events(bad, scope="acme")
        assert err.value.field == f"$.{field}"
    with pytest.raises(DecodeError):
        okta.to_events(_event("user.session.start", published="soon"), scope="acme")
    with pytest.raises(DecodeError):
        okta.to_events(_event("user.session.start", target="x"), scope="acme")
