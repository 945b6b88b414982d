"""The accountability report (``causelog report``): who changed what, and how well we know (pure).

Input: the change events of a period (rows with ``id``, ``time``, ``type``, ``action``,
``target_kind``, ``target_id``, ``actor_id``, ``actor_assurance``, ``links``, ``person`` and
``reviewed``: whether a review is in the event's chain). Output: figures, each with the ids of
the events behind it:

- changes by kind (:func:`pipeline.correlate.ranking.kind_of`), by target and by person;
- reviewed: a review (``change.review*``) in the change's chain;
- verified: the actor's identity was proven (``authenticated``, ``mfa``, ``signed``), and the
  assurance mix;
- unowned: only a claimed identity (``claimed``/``none``), and no linked commit, change, ticket
  or review;
- access and privilege changes, listed one by one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pipeline.correlate.ranking import CHANGE_KINDS, kind_of

VERIFIED = frozenset({"authenticated", "mfa", "signed"})
_OWNER_LINKS = ("commit:", "change:", "ticket:")


def is_change(row: Mapping[str, Any]) -> bool:
    """Whether an event is a change (configuration, deploy, schema, access or data write)."""
    return kind_of(str(row["type"]), str(row.get("action", "")), row.get("statement")) in CHANGE_KINDS


def is_unowned(row: Mapping[str, Any]) -> bool:
    """Claimed identity only, and nothing that ties the change to an owner."""
    if str(row.get("actor_assurance")) in VERIFIED or row.get("reviewed"):
        return False
    return not any(str(k).startswith(_OWNER_LINKS) for k in row.get("links", ()))


def build(rows: Iterable[Mapping[str, Any]], *, since: datetime, until: datetime, top: int = 50) -> dict[str, Any]:
    """The report of the change events among ``rows`` (other events are ignored)."""
    changes = sorted((r for r in rows if is_change(r)), key=lambda r: (str(r["time"]), str(r["id"])))
    by_kind: dict[str, list[str]] = {}
    by_target: dict[str, list[str]] = {}
    by_person: dict[str, list[str]] = {}
    assurance: dict[str, list[str]] = {}
    for r in changes:
        eid = str(r["id"])
        by_kind.setdefault(kind_of(str(r["type"]), str(r.get("action", "")), r.get("statement")), []).append(eid)
        by_target.setdefault(f"{r['target_kind']}:{r['target_id']}", []).append(eid)
        person = (r.get("person") or {}).get("id") or f"(no person) {r['actor_id']}"
        by_person.setdefault(str(person), []).append(eid)
        assurance.setdefault(str(r.get("actor_assurance") or "none"), []).append(eid)
    reviewed = [str(r["id"]) for r in changes if r.get("reviewed")]
    verified = [str(r["id"]) for r in changes if str(r.get("actor_assurance")) in VERIFIED]
    unowned = [r for r in changes if is_unowned(r)]
    access = [r for r in changes if kind_of(str(r["type"]), str(r.get("action", "")), r.get("statement")) == "access"]
    return {
        "since": since,
        "until": until,
        "summary": {"changes": len(changes), "reviewed": len(reviewed), "verified": len(verified),
                    "unowned": len(unowned), "reviewed_events": reviewed, "verified_events": verified},
        "by_kind": _groups(by_kind, "kind", top),
        "by_target": _groups(by_target, "target", top),
        "by_person": _groups(by_person, "person", top),
        "assurance": _groups(assurance, "assurance", top),
        "unowned": [_line(r) for r in unowned],
        "access": [_line(r) for r in access],
    }


def _groups(groups: Mapping[str, list[str]], name: str, top: int) -> list[dict[str, Any]]:
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return [{name: k, "changes": len(v), "events": v} for k, v in ordered]


def _line(r: Mapping[str, Any]) -> dict[str, Any]:
    person = (r.get("person") or {}).get("id")
    return {"time": r["time"], "type": r["type"], "target": f"{r['target_kind']}:{r['target_id']}",
            "actor": f"{r['actor_id']} ({r.get('actor_assurance')})" + (f" — {person}" if person else ""),
            "id": r["id"]}
