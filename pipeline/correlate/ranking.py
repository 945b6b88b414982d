"""Ranking candidate causes for ``why`` so that they survive volume (pure).

With pgaudit on, a database writes thousands of reads an hour; the one configuration change that
explains an outage must still come first. So candidates are ranked by *what kind of change* they
are before anything else, repetitive events are folded into one line, and the incident itself is
kept apart as the symptom.

Kinds (:func:`kind_of`) and their weights:

========  ======  ===========================================================================
kind      weight  events
========  ======  ===========================================================================
config    100     ``config.*``, ``terraform.*``
deploy     90     ``deploy.*``, ``release.*``
schema     80     ``db.ddl``, ``db.table``/``db.database``/``db.function``, CREATE/ALTER/DROP...
access     70     ``access.*``, ``db.role``, privilege changes in ``iam.*`` (policies, users,
                  groups, keys), GRANT/REVOKE and role statements
write      50     ``data.*``, ``db.write``, INSERT/UPDATE/DELETE/MERGE/COPY statements, cloud API
                  calls that are not read-only (``aws.s3.delete_bucket``)
other      30     code, reviews, CI, logins, MFA, role assumptions, sessions
read       10     ``db.query`` reads (SELECT...), read-only API calls (``*.read``)
========  ======  ===========================================================================

``score = weight + 10 × recency + 20 if a change failed`` where recency is 1 at the incident
time and 0 at the start of the window. A change's weight always outweighs recency, so a read can
never outrank a change; a failed change moves up about one kind. Ties: most recent first.

Grouping (:func:`group_key`): events with the same type, action, actor, target, outcome and
normalised statement are one line with ``count``, ``first`` and ``last``; events that carry a
diff, and configuration and deploy events, are never grouped (each is its own change).

Symptoms: a failure that is not a change (a failed query, ``db.failed``, an error report) is
what the incident looks like, not a candidate cause; it is listed apart (:attr:`Ranking.symptoms`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WEIGHTS = {"config": 100, "deploy": 90, "schema": 80, "access": 70, "write": 50, "other": 30, "read": 10}
CHANGE_KINDS = frozenset({"config", "deploy", "schema", "access", "write"})
RECENCY_POINTS = 10.0
FAILED_CHANGE_POINTS = 20.0
# Each event of these types is a change of its own: never folded into a group.
NEVER_GROUPED_PREFIXES = ("config.", "deploy.", "terraform.", "release.")

_PREFIXES = (
    ("config.", "config"), ("terraform.", "config"), ("deploy.", "deploy"), ("release.", "deploy"),
    ("db.ddl", "schema"), ("db.table", "schema"), ("db.database", "schema"), ("db.function", "schema"),
    ("access.", "access"), ("db.role", "access"), ("data.", "write"), ("db.write", "write"),
    ("aws.", "write"),  # a cloud API call that is not read-only changes a resource
)
_SCHEMA_WORDS = ("CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "RENAME")
_ACCESS_WORDS = ("GRANT", "REVOKE")
_ROLE_OBJECTS = ("ROLE", "USER", "GROUP", "DEFAULT")
_WRITE_WORDS = ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "UPSERT", "REPLACE")
# iam.* events that change who may do what (the rest are logins, MFA, role assumptions).
_IAM_PRIVILEGE = ("iam.policy", "iam.role.", "iam.user", "iam.group", "iam.access_key", "iam.login_profile",
                  "iam.instance_profile", "iam.saml", "iam.open_id", "iam.okta.", "iam.sso")
_IAM_SESSION = ("iam.role.assumed", "iam.login", "iam.logout", "iam.mfa", "iam.auth", "iam.session_token",
                "iam.federation_token", "iam.sts.")


def kind_of(type_: str, action: str = "", statement: str | None = None) -> str:
    """The kind of change an event is (see the module table)."""
    if statement:
        words = statement.lstrip("( ").split(None, 2)
        verb = words[0].upper() if words else ""
        obj = words[1].upper() if len(words) > 1 else ""
        if verb in _ACCESS_WORDS or (verb in ("CREATE", "ALTER", "DROP") and obj in _ROLE_OBJECTS):
            return "access"
        if verb in _SCHEMA_WORDS:
            return "schema"
        if verb in _WRITE_WORDS:
            return "write"
        if verb in ("SELECT", "WITH", "SHOW", "EXPLAIN", "FETCH", "VALUES", "TABLE"):
            return "read"
    if type_.endswith(".read") or type_ == "db.query":
        return "read"
    found = next((k for p, k in _PREFIXES if type_.startswith(p)), None)
    if found:
        return found
    if type_.startswith("iam."):
        if type_.startswith(_IAM_SESSION):
            return "other"
        return "access" if type_.startswith(_IAM_PRIVILEGE) or type_.count(".") >= 2 else "other"
    return "other"


def is_symptom(kind: str, outcome: str) -> bool:
    """A failure that is not a change: what the incident looks like, not a cause."""
    return outcome == "failure" and kind not in CHANGE_KINDS


def group_key(e: Mapping[str, Any]) -> tuple[str, ...]:
    """Events with equal keys are one line (see the module doc); ``id`` keeps a change apart."""
    alone = bool(e.get("diff")) or bool(e.get("has_diff")) or str(e["type"]).startswith(NEVER_GROUPED_PREFIXES)
    return (str(e["type"]), str(e.get("action", "")), str(e.get("actor_id", "")), str(e.get("target_kind", "")),
            str(e.get("target_id", "")), str(e.get("outcome", "")), str(e.get("statement") or ""),
            str(e["id"]) if alone else "")


@dataclass(frozen=True)
class Ranked:
    """One line of the answer: an event (the latest of its group), its kind, score and why,
    and for a group how many events it stands for and the first and last time."""

    score: float
    kind: str
    event: Mapping[str, Any]
    count: int
    first: datetime
    last: datetime
    reasons: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Ranking:
    """Ranked causes (best first, at most the limit asked) and the symptoms (latest first)."""

    causes: list[Ranked]
    symptoms: list[Ranked]
    candidates: int  # events considered (grouped lines count their events)


def score(kind: str, outcome: str, last: datetime, at: datetime, window_seconds: float) -> tuple[float, tuple[str, ...]]:
    """The score of a line (see the module doc) and the reasons that make it up."""
    age = max(0.0, (at - _aware(last)).total_seconds())
    recency = 1.0 - min(1.0, age / window_seconds) if window_seconds > 0 else 1.0
    reasons = [f"{kind} change +{WEIGHTS[kind]}" if kind in CHANGE_KINDS else f"{kind} +{WEIGHTS[kind]}",
               f"recency +{RECENCY_POINTS * recency:.1f}"]
    total = WEIGHTS[kind] + RECENCY_POINTS * recency
    if outcome == "failure" and kind in CHANGE_KINDS:
        total += FAILED_CHANGE_POINTS
        reasons.append(f"failed change +{FAILED_CHANGE_POINTS:g}")
    return round(total, 4), tuple(reasons)


def rank(items: Iterable[Mapping[str, Any]], *, at: datetime, window_seconds: float, limit: int = 20) -> Ranking:
    """Group ``items`` (events, or lines already grouped with ``count``/``first``/``last``), score
    each line, and split off the symptoms. Each item needs ``id``, ``type``, ``time`` and
    ``outcome``; ``action``, ``actor_id``, ``target_*``, ``statement``, ``diff`` refine it."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    total = 0
    for e in items:
        n = int(e.get("count", 1))
        first, last = _aware(e.get("first", e["time"])), _aware(e.get("last", e["time"]))
        total += n
        key = group_key(e)
        g = groups.get(key)
        if g is None:
            groups[key] = {"event": e, "count": n, "first": first, "last": last}
            continue
        g["count"] += n
        g["first"] = min(g["first"], first)
        if (last, str(e["id"])) > (g["last"], str(g["event"]["id"])):
            g["event"], g["last"] = e, last
    causes: list[Ranked] = []
    symptoms: list[Ranked] = []
    for g in groups.values():
        e = g["event"]
        kind = kind_of(str(e["type"]), str(e.get("action", "")), e.get("statement"))
        s, reasons = score(kind, str(e.get("outcome", "")), g["last"], at, window_seconds)
        line = Ranked(s, kind, e, g["count"], g["first"], g["last"], reasons)
        (symptoms if is_symptom(kind, str(e.get("outcome", ""))) else causes).append(line)
    causes.sort(key=lambda r: (-r.score, -r.last.timestamp(), str(r.event["id"])))
    symptoms.sort(key=lambda r: (-r.last.timestamp(), str(r.event["id"])))
    return Ranking(causes[:limit], symptoms[:limit], total)


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
