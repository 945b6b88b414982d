"""Summarising the chain of a candidate cause for ``why`` (pure).

For each ranked change (:mod:`pipeline.correlate.ranking`), the events connected to it through
shared link keys tell its story a person can read: commits, review, CI, deploy, sessions, traces,
and who did each step with what assurance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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


def _add(items: list[Any], value: Any) -> None:
    if value not in items:
        items.append(value)
