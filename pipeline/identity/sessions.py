"""Identity through sessions: who is behind an event done with a session's credentials (pure).

An event made with a session's credentials -- an AWS call signed with temporary ``ASIA`` keys,
a statement in a PostgreSQL session, a request in an Okta session, a Kubernetes request with a
token -- names the session's principal (``prod-admin/ops-session``), not the person. The person
is whoever opened the session, and the assurance that counts is the strongest one proven when it
was opened (frida's MFA at 01:55, not the role session's plain signature).

:func:`session_origin` walks from an event back through the events that opened its sessions:

- AWS role chains: the event whose ``diff.session_issued.session`` is the caller's
  ``session:aws:`` key issued it (``AssumeRole``, ``GetSessionToken``...); its own caller session
  leads one step further, up to the identity that first obtained credentials;
- other session keys (``session:postgres:…``, ``session:okta:…``, ``session:k8s:…``): the earliest
  event carrying the key opened the session.

The walk reads only the rows it is given (a chain, or the events linked to the sessions), so it
is the same at query time and in the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ASSURANCE_ORDER = ("none", "claimed", "authenticated", "mfa", "signed")


def stronger(a: str, b: str) -> str:
    """The stronger of two assurances (unknown values count as ``none``)."""
    rank = {v: n for n, v in enumerate(ASSURANCE_ORDER)}
    return a if rank.get(a, 0) >= rank.get(b, 0) else b


@dataclass(frozen=True)
class Step:
    """One event on the way from an event to the origin of its session."""

    event: str
    type: str
    action: str
    actor: str
    principal: str
    assurance: str
    time: Any
    session: str | None  # the session key the event was made with (None: the origin's own credentials)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for answers."""
        return {"event": self.event, "type": self.type, "action": self.action, "actor": self.actor,
                "principal": self.principal, "assurance": self.assurance, "time": self.time,
                "session": self.session}


@dataclass(frozen=True)
class Origin:
    """Who opened the session(s) an event was made with: the origin step (the first event of the
    walk, made with the person's own credentials), the strongest assurance proven on the way,
    and every step from the event back to the origin (the event first)."""

    origin: Step
    assurance: str
    steps: tuple[Step, ...]

    def summary(self) -> str:
        """``mfa at 2026-11-27 01:55 via AssumeRole, AssumeRole``: what was proven, when, and the
        steps that opened the sessions (origin first)."""
        opened = [s.action or s.type for s in reversed(self.steps[1:])]
        return f"{self.assurance} at {_short(self.origin.time)}" + (f" via {', '.join(opened)}" if opened else "")

    def text(self, person: str | None = None) -> str:
        """``frida (mfa at 2026-11-27 01:55 via AssumeRole, AssumeRole)`` (the origin's actor when
        no ``person`` is given): for answers."""
        return f"{person or self.origin.actor} ({self.summary()})"

    def as_dict(self, person: str | None = None) -> dict[str, Any]:
        """JSON form for answers."""
        return {"actor": self.origin.actor, "principal": self.origin.principal, "event": self.origin.event,
                "assurance": self.assurance, "time": self.origin.time, "person": person,
                "summary": self.summary(), "text": self.text(person), "steps": [s.as_dict() for s in self.steps]}


def _issued(e: Mapping[str, Any]) -> str | None:
    diff = e.get("diff")
    issued = diff.get("session_issued") if isinstance(diff, dict) else None
    key = issued.get("session") if isinstance(issued, dict) else None
    return key if isinstance(key, str) else None


def _caller(e: Mapping[str, Any]) -> str | None:
    """The session key ``e`` was made with (not one it issued)."""
    own = _issued(e)
    return next((str(k) for k in e.get("links", ()) if str(k).startswith("session:") and k != own), None)


def _step(e: Mapping[str, Any], session: str | None) -> Step:
    return Step(str(e["id"]), str(e.get("type", "")), str(e.get("action", "")), str(e.get("actor_id", "")),
                str(e.get("actor_principal") or ""), str(e.get("actor_assurance") or "none"), e.get("time"), session)


class SessionIndex:
    """The events that opened sessions among a set of rows, for :meth:`origin` walks."""

    def __init__(self, events: Iterable[Mapping[str, Any]]) -> None:
        self.issuers: dict[str, Mapping[str, Any]] = {}
        self.openers: dict[str, Mapping[str, Any]] = {}
        for e in sorted(events, key=lambda x: (str(x.get("time")), str(x["id"]))):
            issued = _issued(e)
            if issued is not None:
                self.issuers.setdefault(issued, e)
            for k in e.get("links", ()):
                if str(k).startswith("session:") and not str(k).startswith("session:aws:"):
                    self.openers.setdefault(str(k), e)

    def origin(self, event: Mapping[str, Any]) -> Origin | None:
        """Where ``event``'s session credentials come from, or None when it used its own."""
        steps: list[Step] = []
        seen: set[str] = set()
        current: Mapping[str, Any] | None = event
        while current is not None and str(current["id"]) not in seen:
            seen.add(str(current["id"]))
            key = _caller(current)
            nxt = None
            if key is not None:
                nxt = self.issuers.get(key) if key.startswith("session:aws:") else self.openers.get(key)
                if nxt is not None and str(nxt["id"]) == str(current["id"]):
                    nxt = None  # the session's own first event: opened with the actor's credentials
            steps.append(_step(current, key if nxt is not None else None))
            current = nxt
        if len(steps) < 2:
            return None
        assurance = "none"
        # What counts is what was proven when the session was opened: the origin and the steps
        # that opened sessions from it (a later plain signature proves nothing new).
        for s in steps[1:]:
            assurance = stronger(assurance, s.assurance)
        return Origin(steps[-1], assurance, tuple(steps))


def session_origin(event: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Origin | None:
    """:meth:`SessionIndex.origin` of ``event`` among ``events``."""
    return SessionIndex(events).origin(event)


def _short(t: Any) -> str:
    text = t.isoformat() if hasattr(t, "isoformat") else str(t)
    return text.replace("T", " ")[:16]
