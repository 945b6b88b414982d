"""Builders for identity tests: envelopes with a given source, actor and raw record."""

from __future__ import annotations

from typing import Any

from pipeline.identity import Join, Strength, make_join
from pipeline.model import Event, decode_dict, event_id


def envelope(
    source: str, raw: Any, *, actor_id: str = "github:someone", principal: str = "", n: int = 0
) -> Event:
    """A valid event from ``source`` (``github://o/r``, ``okta://okta``...) carrying ``raw``."""
    return decode_dict(
        {
            "specversion": "1.0",
            "id": event_id(source, n, actor_id),
            "source": source,
            "type": "test.event",
            "time": "2026-11-27T00:00:00Z",
            "scope": "acme",
            "actor": {"id": actor_id, "principal": principal, "kind": "human", "assurance": "authenticated"},
            "target": {"kind": "repo", "id": "acme/api"},
            "action": "test",
            "outcome": "success",
            "raw": raw,
        }
    )


def join(
    p: str, q: str, strength: Strength = "asserted", *, event: str = "ev1", system: str = "github"
) -> Join:
    """A join for map tests (fails loudly if the principals are not valid)."""
    made = make_join(p, q, strength=strength, system=system, rule="test.rule", event_id=event)
    assert made is not None, (p, q)
    return made
