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
causelog ``type`` (``iam``, ``config``, ``db`` ...).
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
    return all(want is None or want == have for want, have in zip(rule_ls, event_ls, strict=True))
