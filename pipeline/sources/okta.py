"""Okta System Log events -> change events (pure part of the Okta source).

``to_events(okta_event, *, scope)`` maps one System Log ``LogEvent`` (as returned by
``/api/v1/logs`` or an event hook) to exactly one envelope.

Types
-----
==========================================================  =====================================
``user.session.start``                                      ``iam.login``
``user.session.end``                                        ``iam.logout``
``user.authentication.auth_via_mfa``, ``user.mfa.okta_verify``  ``iam.mfa.verified``
``user.mfa.okta_verify.deny_push``                          ``iam.mfa.denied``
``user.authentication.verify``                              ``iam.auth.verified``
``user.authentication.sso``                                 ``iam.sso``
``user.session.impersonation.grant|initiate|end``           ``access.impersonation.<x>``
``group.user_membership.add`` / ``.remove``                 ``access.group.member_added`` /
                                                            ``access.group.member_removed``
``application.user_membership.add`` / ``.remove``           ``access.app.user_assigned`` /
                                                            ``access.app.user_unassigned``
``group.application_assignment.add`` / ``.remove``          ``access.app.group_assigned`` /
                                                            ``access.app.group_unassigned``
``user.account.privilege.grant`` / ``.revoke``              ``access.admin.granted`` /
                                                            ``access.admin.revoked``
``user.lifecycle.<x>``                                      ``iam.user.<x>`` (``create``,
                                                            ``activate``, ``deactivate``,
                                                            ``suspend``, ``delete``...)
``user.mfa.factor.<x>``                                     ``iam.mfa.factor_<x>``
``user.account.update_password``, ``reset_password``         ``iam.user.password_<x>``
``policy.lifecycle.<x>``, ``policy.rule.<x>``               ``config.okta.policy.<x>``,
                                                            ``config.okta.policy_rule.<x>``
anything else                                               ``iam.okta.<eventType>``
                                                            (``iam.okta.policy.evaluate_sign_on``,
                                                            ``iam.okta.app.user_management``)
==========================================================  =====================================

``action`` is the Okta ``eventType`` verbatim. Outcome from ``outcome.result``: ``SUCCESS``/
``ALLOW`` -> ``success``; ``FAILURE``/``DENY`` -> ``failure``; ``SKIPPED``/``UNKNOWN``/
``CHALLENGE``/missing -> ``unknown``.

Actor: ``okta:<actor.alternateId>`` (the login, an e-mail for users) as ``id`` and ``principal``,
``display`` = ``displayName``; ``kind`` ``human`` for ``User``, ``service`` for
``SystemPrincipal``, API tokens and apps, else ``unknown``. Assurance: ``mfa`` for a successful
MFA verification (the types above, or any successful event whose
``authenticationContext.authenticationProvider`` is ``FACTOR_PROVIDER`` or whose
``debugContext.debugData.factor`` names a factor); ``claimed`` for a failed authentication;
``authenticated`` otherwise (Okta authenticated the actor or it is Okta itself). Assurance is
per event: a session's later events get ``mfa`` through the session chain
(``session:okta:<id>``), not by copying it here.

Links: ``session:okta:<authenticationContext.externalSessionId>`` (and ``rootSessionId`` when
present); ``request:<debugContext.debugData.requestId>`` and ``request:<transaction.id>``
(often equal for web requests; ``unique`` keeps one). Placeholder values Okta writes when
there is nothing (``unknown``, ``null``, empty) are not linked.

Target: the most relevant ``target[]`` entry -- the group for membership changes (the user is
the ``subject``), the app for app assignments, else the first -- as kind
``okta.<type>`` (``okta.user``, ``okta.usergroup``, ``okta.appinstance``...), id the Okta id,
name the display name (``alternateId`` when there is none). Without targets: the Okta org
(``okta.org``, id = the caller's ``org`` argument or ``okta``).

Id: ``event_id("okta", uuid, keyed hash of the canonical JSON of the event)``: Okta's ``uuid`` is unique
per event, and the content digest keeps anonymised exports (where many events share a
placeholder uuid) from collapsing; a replay of the same event has the same id. ``source`` is
``okta://<org>``. ``raw`` is the event through :func:`~pipeline.sources.redact.redact`.
"""

from __future__ import annotations

from typing import Any

from pipeline.model import Event, event_id
from pipeline.sources._normalize import (
    build,
    canonical_digest,
    dig,
    fail,
    first_time,
    need,
    require_dict,
    slug,
)
from pipeline.sources.redact import redact

__all__ = ["to_events"]

_EXACT_TYPES = {
    "user.session.start": "iam.login",
    "user.session.end": "iam.logout",
    "user.authentication.auth_via_mfa": "iam.mfa.verified",
    "user.mfa.okta_verify": "iam.mfa.verified",
    "user.mfa.okta_verify.deny_push": "iam.mfa.denied",
    "user.authentication.verify": "iam.auth.verified",
    "user.authentication.sso": "iam.sso",
    "group.user_membership.add": "access.group.member_added",
    "group.user_membership.remove": "access.group.member_removed",
    "application.user_membership.add": "access.app.user_assigned",
    "application.user_membership.remove": "access.app.user_unassigned",
    "group.application_assignment.add": "access.app.group_assigned",
    "group.application_assignment.remove": "access.app.group_unassigned",
    "user.account.privilege.grant": "access.admin.granted",
    "user.account.privilege.revoke": "access.admin.revoked",
    "user.account.update_password": "iam.user.password_update",
    "user.account.reset_password": "iam.user.password_reset",
}
_PREFIX_TYPES = (
    ("user.session.impersonation.", "access.impersonation."),
    ("user.lifecycle.", "iam.user."),
    ("user.mfa.factor.", "iam.mfa.factor_"),
    ("policy.lifecycle.", "config.okta.policy."),
    ("policy.rule.", "config.okta.policy_rule."),
)
_MFA_TYPES = frozenset({"user.authentication.auth_via_mfa", "user.mfa.okta_verify"})
_AUTH_TYPES = frozenset(
    {
        "user.session.start",
        "user.authentication.verify",
        "user.authentication.sso",
        "user.authentication.auth_via_mfa",
        "user.mfa.okta_verify",
    }  # fmt: skip
)
_PLACEHOLDERS = frozenset({"", "unknown", "null", "none"})
_SERVICE_ACTORS = frozenset({"SystemPrincipal", "PublicClientApp", "AppInstance", "Client", "ApiToken"})


def _type(event_type: str) -> str:
    if event_type in _EXACT_TYPES:
        return _EXACT_TYPES[event_type]
    for prefix, mapped in _PREFIX_TYPES:
        if event_type.startswith(prefix):
            return mapped + slug(event_type[len(prefix) :].replace(".", "_"))
    segments = [slug(s) for s in event_type.split(".") if s]
    return "iam.okta." + ".".join(segments or ["event"])


def _outcome(event: dict[str, Any]) -> str:
    result = dig(event, "outcome", "result")
    if not isinstance(result, str):
        return "unknown"
    result = result.upper()
    if result in ("SUCCESS", "ALLOW"):
        return "success"
    if result in ("FAILURE", "DENY"):
        return "failure"
    return "unknown"


def _value(value: Any) -> str | None:
    if (
        isinstance(value, str)
        and value.strip().lower() not in _PLACEHOLDERS
        and not any(c.isspace() for c in value)
    ):
        return value
    return None


def _actor(event: dict[str, Any], event_type: str, outcome: str) -> dict[str, Any]:
    need(event, "actor", kind=dict)
    actor = event["actor"]
    login = actor.get("alternateId") if _value(actor.get("alternateId")) else None
    ident = login or _value(actor.get("id"))
    if ident is None:
        raise fail("missing_field", "the actor has neither alternateId nor id", "$.actor.alternateId")
    actor_type = actor.get("type") if isinstance(actor.get("type"), str) else ""
    kind = "human" if actor_type == "User" else "service" if actor_type in _SERVICE_ACTORS else "unknown"
    factor = dig(event, "debugContext", "debugData", "factor")
    provider = dig(event, "authenticationContext", "authenticationProvider")
    mfa = (
        outcome == "success"
        and "deny" not in event_type
        and (event_type in _MFA_TYPES or provider == "FACTOR_PROVIDER" or bool(_value(factor)))
    )
    if mfa:
        assurance = "mfa"
    elif outcome == "failure" and (
        event_type in _AUTH_TYPES or event_type.startswith("user.authentication.")
    ):
        assurance = "claimed"
    else:
        assurance = "authenticated"
    display = actor.get("displayName") if isinstance(actor.get("displayName"), str) else ""
    return {
        "id": f"okta:{ident}",
        "display": display or ident,
        "kind": kind,
        "principal": f"okta:{ident}",
        "verified": assurance != "claimed",
        "assurance": assurance,
    }


def _targets(event: dict[str, Any]) -> list[dict[str, Any]]:
    targets = event.get("target")
    if targets is None:
        return []
    if not isinstance(targets, list):
        raise fail("wrong_type", "expected an array of targets", "$.target", type(targets).__name__)
    return [t for t in targets if isinstance(t, dict) and _value(t.get("id"))]


def _pick(targets: list[dict[str, Any]], event_type: str) -> tuple[dict[str, Any] | None, str | None]:
    """The target to report and the subject (the user a membership change is about)."""
    if not targets:
        return None, None
    by_type: dict[str, dict[str, Any]] = {}
    for t in targets:
        by_type.setdefault(str(t.get("type")), t)
    user = by_type.get("User")
    subject = None
    if user is not None:
        subject = user.get("alternateId") if _value(user.get("alternateId")) else user.get("id")
    if event_type.startswith("group.user_membership.") and "UserGroup" in by_type:
        return by_type["UserGroup"], subject
    if event_type.startswith(("application.", "group.application_assignment.", "app.")):
        for kind in ("AppInstance", "AppGroup", "UserGroup"):
            if kind in by_type:
                return by_type[kind], subject
    first = targets[0]
    return first, (subject if first is not user else None)


def to_events(okta_event: Any, *, scope: str, org: str | None = None) -> list[Event]:
    """The change event of one Okta System Log event (always exactly one; see the module doc)."""
    event = require_dict(okta_event, "$", "an Okta System Log event object")
    event_type = need(event, "eventType")
    uuid = need(event, "uuid")
    found = first_time([("$.published", event.get("published"))])
    if found is None:
        raise fail("missing_field", "no usable `published` time", "$.published", event.get("published"))
    outcome = _outcome(event)
    actor = _actor(event, event_type, outcome)
    picked, subject = _pick(_targets(event), event_type)
    org_name = org or "okta"
    if picked is None:
        target = {"kind": "okta.org", "id": org_name, "name": org_name}
    else:
        name = next(
            (
                v
                for v in (picked.get("displayName"), picked.get("alternateId"))
                if isinstance(v, str) and v.strip()
            ),
            "",
        )
        target = {
            "kind": f"okta.{slug(picked.get('type') or 'object')}",
            "id": str(picked["id"]),
            "name": name,
        }
    links = [
        f"session:okta:{v}"
        if (v := _value(dig(event, "authenticationContext", "externalSessionId")))
        else None,
        f"session:okta:{v}" if (v := _value(dig(event, "authenticationContext", "rootSessionId"))) else None,
        f"request:{v}" if (v := _value(dig(event, "debugContext", "debugData", "requestId"))) else None,
        f"request:{v}" if (v := _value(dig(event, "transaction", "id"))) else None,
    ]
    envelope: dict[str, Any] = {
        "id": event_id("okta", uuid, canonical_digest(event)),
        "source": f"okta://{org_name}",
        "type": _type(event_type),
        "time": found[1],
        "scope": scope,
        "actor": actor,
        "target": target,
        "action": event_type,
        "outcome": outcome,
        "links": links,
        "raw": redact(event),
    }
    if subject:
        envelope["subject"] = str(subject)
    return [build(envelope)]
