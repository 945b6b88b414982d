"""GitHub organization audit-log entries -> change events (pure part of the GitHub audit source).

Input: one entry of the organization (or enterprise) audit log as the REST API
(``GET /orgs/{org}/audit-log``) or the JSON export returns it -- ``action``
(``<category>.<verb>``), ``actor``, ``org``, ``repo``, ``user``, ``created_at`` / ``@timestamp``
(epoch milliseconds), ``_document_id``, ``data{}`` and category-specific fields.
:func:`parse_lines` reads a JSON Lines export. ``to_events(entry, *, scope)`` returns exactly one
envelope; nothing is dropped.

Types (``<verb>`` is the part of ``action`` after the category)
---------------------------------------------------------------
=========================================================  =====================================
``pull_request.merge``                                     ``change.merged``
``pull_request.create`` / ``close`` / ``reopen``           ``change.opened`` / ``change.closed``
                                                           / ``change.reopened``
``pull_request.create_review_request``                     ``change.review_requested``
``pull_request.<verb>`` (others)                           ``change.<verb>``
``pull_request_review.submit`` / ``dismiss`` / ``delete``  ``change.reviewed`` /
                                                           ``change.review_dismissed`` /
                                                           ``change.review_deleted``
``pull_request_review_comment.<verb>``                     ``change.review_comment_<verb>``
``protected_branch.<verb>``                                ``config.branch_protection.<verb>``
``repository_ruleset.<verb>``                              ``config.ruleset.<verb>``
``hook``, ``environment``, ``repository_vulnerability_     ``config.<category>.<verb>``
alerts``, ``secret_scanning*``, ``dependabot*``,           (``hook`` -> ``config.webhook``,
``organization_default_label``, ``actions``...             ``organization_default_label`` ->
(see ``_CONFIG``)                                          ``config.default_label``)
``team.<verb>``                                            ``access.team.<verb>``
                                                           (``access.team.add_member``)
``org.<verb>``                                             ``access.org.<verb>``
                                                           (``access.org.add_member``,
                                                           ``access.org.invite_member``)
``repo.add_member`` / ``remove_member`` / ``update_member``  ``access.repo.<verb>``
``integration_installation``, ``oauth_application``,       ``access.<category>.<verb>``
``personal_access_token``, ``org_credential_authorization``,
``business``... (see ``_ACCESS``)
``repo.<verb>`` (others)                                   ``repo.<verb>`` (``repo.create``,
                                                           ``repo.transfer``)
``workflows.<verb>``                                       ``ci.workflows.<verb>``
``git.<verb>``                                             ``git.<verb>`` (``git.push``)
anything else                                              ``github.audit.<category>.<verb>``
=========================================================  =====================================

``action`` is the audit action verbatim. Outcome: ``failure`` for
``protected_branch.rejected_ref_update`` (the push was refused) and other actions whose verb is
``reject``/``rejected...``; ``success`` otherwise (the audit log records what happened).

Actor: ``github:<actor>`` (the same id as :mod:`pipeline.sources.github` webhooks), kind
``service`` for ``[bot]`` logins or ``actor_is_bot``, else ``human``; ``verified`` and
``authenticated`` (GitHub authenticated the actor). Entries without an actor (GitHub itself)
are ``github:github``, kind ``service``.

Target: a pull request (``pull_request``, id ``owner/repo#n``) when a number is known; a branch
protection rule (``branch_protection_rule``, ``owner/repo:<branch or pattern>``) for
``protected_branch.*`` with a branch; the team (``team``, ``org/slug`` from ``team`` or
``data.team``) for ``team.*``; else the repository (``repo``, ``owner/repo``), else the
organization (``org``), else the actor. ``subject`` is the affected user (``user``) when there
is one.

Links: ``change:<owner/repo>#<n>`` when the entry names a pull request number
(``pull_request_number``, ``data.pull_request_number``, ``data.number`` on pull-request actions,
or a ``pull_request_url``/``url`` ending ``/pull/<n>``); ``commit:<sha>`` for 40/64-hex
``head_sha``, ``after``, ``sha``, ``commit_sha`` (top level or in ``data``).

Time: ``created_at``, else ``@timestamp`` (epoch ms or RFC 3339). Id:
``event_id("github-audit", _document_id)`` when present, else
``event_id("github-audit", keyed hash of the canonical JSON of the entry)``. ``source`` is
``github-audit://<org>`` (or ``<business>``). ``raw`` is the entry through
:func:`~pipeline.sources.redact.redact` (``hashed_token`` and the like are hashed).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.model import Event, event_id
from pipeline.sources._normalize import build, canonical_digest, fail, first_time, need, require_dict, slug
from pipeline.sources.redact import redact

__all__ = ["parse_lines", "to_events"]

_PR_TYPES = {
    "merge": "change.merged",
    "create": "change.opened",
    "close": "change.closed",
    "reopen": "change.reopened",
    "create_review_request": "change.review_requested",
    "remove_review_request": "change.review_request_removed",
}
_REVIEW_TYPES = {
    "submit": "change.reviewed",
    "dismiss": "change.review_dismissed",
    "delete": "change.review_deleted",
}
_CONFIG = {
    "protected_branch": "branch_protection",
    "repository_ruleset": "ruleset",
    "hook": "webhook",
    "environment": "environment",
    "repository_vulnerability_alerts": "vulnerability_alerts",
    "repository_vulnerability_alert": "vulnerability_alert",
    "secret_scanning": "secret_scanning",
    "secret_scanning_push_protection": "secret_scanning_push_protection",
    "repository_secret_scanning": "secret_scanning",
    "repository_secret_scanning_push_protection": "secret_scanning_push_protection",
    "dependabot_alerts": "dependabot_alerts",
    "dependabot_security_updates": "dependabot_security_updates",
    "organization_default_label": "default_label",
    "actions": "actions",
    "repository_branch_protection_evaluation": "branch_protection_evaluation",
    "codespaces": "codespaces",
    "pages": "pages",
    "deploy_key": "deploy_key",
}
_ACCESS = frozenset(
    {
        "team", "org", "integration_installation", "integration_installation_request", "integration",
        "oauth_application", "oauth_access", "oauth_authorization", "personal_access_token",
        "org_credential_authorization", "business", "members_can_create_pages",
        "role", "organization_role", "repository_role", "sso", "saml", "ip_allow_list",
        "ip_allow_list_entry", "public_key", "ssh_certificate_authority", "two_factor_authentication",
    }
)  # fmt: skip
_REPO_ACCESS_VERBS = frozenset({"add_member", "remove_member", "update_member", "add_outside_collaborator", "remove_outside_collaborator"})  # fmt: skip
_PR_URL = re.compile(r"(?:https?://[^/]+/|/repos/)(?P<repo>[^/\s]+/[^/\s]+)/pulls?/(?P<n>\d+)(?:[/?#].*)?$")
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def parse_lines(text: str | Iterable[str], *, stats: Counter[str] | None = None) -> Iterator[dict[str, Any]]:
    """The entries of a JSON Lines audit-log export (blank and non-object lines counted, skipped)."""
    lines = text.splitlines() if isinstance(text, str) else text
    for line in lines:
        if not line.strip():
            if stats is not None:
                stats["blank_lines"] += 1
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if stats is not None:
                stats["bad_json"] += 1
            continue
        if isinstance(obj, dict):
            if stats is not None:
                stats["entries"] += 1
            yield obj
        elif stats is not None:
            stats["not_an_entry"] += 1


def _type(category: str, verb: str) -> str:
    v = slug(verb)
    if category == "pull_request":
        return _PR_TYPES.get(verb, f"change.{v}")
    if category == "pull_request_review":
        return _REVIEW_TYPES.get(verb, f"change.review_{v}")
    if category == "pull_request_review_comment":
        return f"change.review_comment_{v}"
    if category in _CONFIG:
        return f"config.{_CONFIG[category]}.{v}"
    if category == "repo" and verb in _REPO_ACCESS_VERBS:
        return f"access.repo.{v}"
    if category in _ACCESS:
        return f"access.{slug(category)}.{v}"
    if category == "repo":
        return f"repo.{v}"
    if category == "workflows":
        return f"ci.workflows.{v}"
    if category == "git":
        return f"git.{v}"
    return f"github.audit.{slug(category)}.{v}"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _data(entry: dict[str, Any]) -> dict[str, Any]:
    data = entry.get("data")
    return data if isinstance(data, dict) else {}


def _pull_request(entry: dict[str, Any], category: str, repo: str | None) -> tuple[str, int] | None:
    data = _data(entry)
    for url in (
        entry.get("pull_request_url"),
        data.get("pull_request_url"),
        entry.get("url") if category.startswith("pull_request") else None,
    ):
        m = _PR_URL.search(url) if isinstance(url, str) else None
        if m:
            return m.group("repo"), int(m.group("n"))
    candidates = [entry.get("pull_request_number"), data.get("pull_request_number")]
    if category.startswith("pull_request"):
        candidates += [entry.get("number"), data.get("number")]
    for value in candidates:
        n = _number(value)
        if n is not None and repo:
            return repo, n
    return None


def _commits(entry: dict[str, Any]) -> list[str]:
    out: list[str] = []
    data = _data(entry)
    for where in (entry, data):
        for key in ("head_sha", "after", "sha", "commit_sha"):
            value = where.get(key)
            if isinstance(value, str) and _SHA.fullmatch(value) and set(value) != {"0"}:
                out.append(f"commit:{value}")
    return out


def to_events(entry: Any, *, scope: str) -> list[Event]:
    """The change event of one audit-log entry (always exactly one; see the module docstring)."""
    entry = require_dict(entry, "$", "a GitHub audit-log entry object")
    action = need(entry, "action")
    category, _, verb = action.partition(".")
    verb = verb or category
    found = first_time([("$.created_at", entry.get("created_at")), ("$.@timestamp", entry.get("@timestamp"))])
    if found is None:
        raise fail(
            "missing_field", "no usable created_at or @timestamp", "$.created_at", entry.get("created_at")
        )

    login = _str(entry.get("actor"))
    if entry.get("actor") is not None and login is None:
        raise fail("wrong_type", "expected the actor's login", "$.actor", entry.get("actor"))
    bot = entry.get("actor_is_bot") is True or (login or "").endswith("[bot]")
    actor = {
        "id": f"github:{login or 'github'}",
        "display": login or "GitHub",
        "kind": "service" if bot or login is None else "human",
        "principal": f"github:{login or 'github'}",
        "verified": True,
        "assurance": "authenticated",
    }

    data = _data(entry)
    org = _str(entry.get("org")) or _str(entry.get("business"))
    repo = _str(entry.get("repo")) or _str(data.get("repo"))
    team = _str(entry.get("team")) or _str(data.get("team"))
    user = _str(entry.get("user")) or _str(data.get("user"))
    pr = _pull_request(entry, category, repo)
    branch = _str(entry.get("branch")) or _str(data.get("branch")) or _str(data.get("name"))

    if pr is not None:
        title = _str(entry.get("pull_request_title")) or ""
        target = {"kind": "pull_request", "id": f"{pr[0]}#{pr[1]}", "name": title}
    elif category == "protected_branch" and repo and branch:
        target = {"kind": "branch_protection_rule", "id": f"{repo}:{branch}", "name": branch}
    elif category == "team" and team:
        if "/" not in team and org:
            team = f"{org}/{team}"
        target = {"kind": "team", "id": team, "name": team.rsplit("/", 1)[-1]}
    elif repo:
        target = {"kind": "repo", "id": repo, "name": repo.rsplit("/", 1)[-1]}
    elif org:
        target = {"kind": "org", "id": org, "name": org}
    else:
        target = {"kind": "user", "id": login or "github", "name": login or "GitHub"}

    outcome = "success"
    if action == "protected_branch.rejected_ref_update" or re.search(r"\.(?:reject|rejected)(?:_|$)", action):
        outcome = "failure"

    links: list[str | None] = [f"change:{pr[0]}#{pr[1]}" if pr else None, *_commits(entry)]
    doc_id = _str(entry.get("_document_id"))
    envelope: dict[str, Any] = {
        "id": event_id("github-audit", doc_id)
        if doc_id
        else event_id("github-audit", canonical_digest(entry)),
        "source": f"github-audit://{org}" if org else "github-audit://github.com",
        "type": _type(category, verb),
        "time": found[1],
        "scope": scope,
        "actor": actor,
        "target": target,
        "action": action,
        "outcome": outcome,
        "links": links,
        "raw": redact(entry),
    }
    if user:
        envelope["subject"] = user
    elif category == "team" and repo:
        envelope["subject"] = repo
    return [build(envelope)]
