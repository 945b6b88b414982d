"""Which Sigma logsource an envelope belongs to, and which document its rules read (pure).

Native logsources evaluate on the envelope's ``raw`` (the source system's own record, secrets
already hashed), so community rules run with that system's field names. ``product: causelog``
evaluates on the envelope itself (``type``, ``actor.assurance``, ``target.id``, ``links``, ...).

| envelope ``source``      | product      | service    | document |
|--------------------------|--------------|------------|----------|
| ``cloudtrail://...``     | aws          | cloudtrail | CloudTrail record |
| ``okta://...``           | okta         | okta       | Okta System Log event |
| ``github-audit://...``   | github       | audit      | organisation audit-log entry |
| ``k8s-audit...``         | kubernetes   | audit      | API-server audit ``Event`` |
| ``github://...``         | github       | webhook    | webhook payload |
| ``git://...``            | git          | commit     | commit record |
| ``postgres://...``       | postgresql   | log        | log record (+ parsed statement) |
| ``debezium://...``       | debezium     | cdc        | change event (no row values) |
| ``terraform://...``      | terraform    | plan       | plan resource change |
| ``config://...``         | config       | file       | file change |
| any                      | causelog     | (source kind) | the envelope |

A rule's ``logsource`` matches when each of its ``product``/``service``/``category`` keys equals
the event's (case-insensitively); ``category`` of a native event is the first segment of its
causelog ``type`` (``iam``, ``config``, ``db`` ...). A native event is also in Sigma's generic
category ``application`` (:data:`SIGMA_CATEGORIES`): SigmaHQ's Kubernetes audit rules say
``category: application`` next to ``product: kubernetes`` / ``service: audit``, and must run
unchanged.
"""

from __future__ import annotations

from typing import Any

#: scheme of the envelope's ``source`` -> (product, service)
NATIVE: dict[str, tuple[str, str]] = {
    "cloudtrail": ("aws", "cloudtrail"),
    "okta": ("okta", "okta"),
    "github-audit": ("github", "audit"),
    "k8s-audit": ("kubernetes", "audit"),
    "github": ("github", "webhook"),
    "git": ("git", "commit"),
    "postgres": ("postgresql", "log"),
    "debezium": ("debezium", "cdc"),
    "terraform": ("terraform", "plan"),
    "config": ("config", "file"),
}

CAUSELOG = "causelog"

#: Sigma taxonomy categories every native logsource belongs to, besides its causelog category
SIGMA_CATEGORIES = frozenset({"application"})


def source_kind(source: str) -> str:
    """``cloudtrail://111/eu-west-1`` -> ``cloudtrail``; ``k8s-audit`` -> ``k8s-audit``."""
    head, sep, _ = source.partition("://")
    return head if sep else source


def event_logsource(envelope: dict[str, Any]) -> tuple[str, str, str]:
    """(product, service, category) of an envelope's native logsource; product ``""`` if none."""
    kind = source_kind(str(envelope.get("source", "")))
    product, service = NATIVE.get(kind, ("", ""))
    category = str(envelope.get("type", "")).partition(".")[0]
    return product, service, category


def matches(rule_ls: tuple[str | None, str | None, str | None], event_ls: tuple[str, str, str]) -> bool:
    """Does a rule's (product, service, category) select an event's logsource?"""
    product, service, category = rule_ls
    have_product, have_service, have_category = event_ls
    if product is not None and product != have_product:
        return False
    if service is not None and service != have_service:
        return False
    if category is None or category == have_category:
        return True
    return category in SIGMA_CATEGORIES and have_product not in ("", CAUSELOG)
