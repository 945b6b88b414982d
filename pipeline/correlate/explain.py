"""Ranking candidate causes and summarising their chains for ``why`` (pure).

Given the changes to a target and its related things in a window before an incident, and for
each the events connected to it through shared link keys, produce a ranked list a person can
read: the change, who made it with what assurance, and its story (commit, review, CI, deploy,
session) as far as the links tell it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Kinds of change that break things more often than others, and how much they move up.
_BOOSTS = (
    ("config.", 3.0),
    ("deploy.", 3.0),
    ("access.", 2.5),
    ("iam.", 2.0),
    ("terraform.", 2.0),
    ("data.", 1.5),
    ("db.ddl", 2.0),
    ("db.query", 1.0),
)


@dataclass(frozen=True)
class Cause:
    """One ranked candidate with its chain summary."""

    score: float
    event: Mapping[str, Any]
    chain: list[Mapping[str, Any]]
    story: dict[str, Any] = field(default_factory=dict)


def score(event: Mapping[str, Any], at: datetime, window_seconds: float) -> float:
    """Higher is more suspect: recent, failed, and of a risky kind."""
    age = max(0.0, (at - _aware(event["time"])).total_seconds())
    recency = 1.0 - min(1.0, age / window_seconds) if window_seconds > 0 else 1.0
    boost = next((b for prefix, b in _BOOSTS if str(event["type"]).startswith(prefix)), 0.0)
    failed = 2.0 if event.get("outcome") == "failure" else 0.0
    return round(4.0 * recency + boost + failed, 4)


def story(chain: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the links of a chain tell: commits, changes, reviewers, CI, deployers, sessions, traces."""
    out: dict[str, Any] = {"commits": [], "changes": [], "reviewers": [], "ci": [], "deployers": [],
                           "sessions": [], "traces": [], "actors": []}
    for e in chain:
        for link in e.get("links", ()):
            kind, _, rest = str(link).partition(":")
            bucket = {"commit": "commits", "change": "changes", "session": "sessions", "trace": "traces"}.get(kind)
            if bucket:
                _add(out[bucket], rest)
        t = str(e["type"])
        who = f"{e['actor_id']} ({e['actor_assurance']})"
        if t.startswith("change.review"):
            _add(out["reviewers"], who)
        elif t.startswith("ci."):
            _add(out["ci"], f"{t} {e['outcome']}")
        elif t.startswith("deploy."):
            _add(out["deployers"], who)
        _add(out["actors"], who)
    return {k: v for k, v in out.items() if v}


def rank(
    candidates: Iterable[Mapping[str, Any]],
    chains: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    at: datetime,
    window_seconds: float,
    limit: int = 20,
) -> list[Cause]:
    """Candidates by descending score (ties: most recent first), each with its chain story."""
    scored = [
        Cause(score(e, at, window_seconds), e, list(chains.get(str(e["id"]), [])), story(chains.get(str(e["id"]), [e])))
        for e in candidates
    ]
    scored.sort(key=lambda c: (-c.score, -_aware(c.event["time"]).timestamp(), str(c.event["id"])))
    return scored[:limit]


def _add(items: list[Any], value: Any) -> None:
    if value not in items:
        items.append(value)


def _aware(value: Any) -> datetime:
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
