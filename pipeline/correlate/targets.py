"""Which targets a typed name means (pure): ``why payments-db``, ``timeline --target``, topology.

Real sources name targets by ARN (``arn:aws:cloudtrail:us-east-1:1234:trail/ct-stop-trail``) or a
kind-qualified id (``database/payments-db``); people type the name they know. A target answers to:

===========================  ============================================  ==================
form                         example                                       ``how`` it matched
===========================  ============================================  ==================
its id                       ``database/payments-db``                      ``target.id``
its name                     ``payments-db``                               ``target.name``
its service                  ``payments``                                  ``target.service``
last segment of the id       ``ct-stop-trail`` (ARN), ``payments-db``      ``last segment``
``kind:segment``             ``database:payments-db``                      ``kind:name``
===========================  ============================================  ==================

The match goes one way: the typed name is one of the target's forms (``acme/api`` does not match
a target that is only named ``api``). The store keeps these forms per event in the materialized column ``events.target_names``
(schemas/clickhouse/008_incident.sql computes the same list as :func:`target_forms`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_SEGMENTS = re.compile(r"[/:]")


def last_segment(value: str) -> str:
    """The text after the last ``/`` or ``:`` (an ARN's resource name, a ``kind/name``'s name)."""
    return _SEGMENTS.split(value)[-1]


def target_forms(kind: str, target_id: str, name: str = "", service: str = "") -> list[str]:
    """Every name a target answers to, in the order of the table above (no blanks, no repeats)."""
    seg = last_segment(target_id) if target_id else ""
    forms = [target_id, name, service, seg, f"{kind}:{seg}" if kind and seg else "",
             f"{kind}:{name}" if kind and name else ""]
    return list(dict.fromkeys(f for f in forms if f))


def how_matched(typed: str, kind: str, target_id: str, name: str = "", service: str = "") -> str:
    """The strongest way ``typed`` names this target (see the table), or ``""`` when it does not."""
    seg = last_segment(target_id) if target_id else ""
    checks = (
        ("target.id", typed == target_id),
        ("kind:name", bool(kind) and typed in (f"{kind}:{seg}", f"{kind}:{name}")),
        ("target.name", typed == name),
        ("last segment", typed == seg),
        ("target.service", typed == service),
    )
    return next((how for how, ok in checks if ok), "")


@dataclass(frozen=True)
class Match:
    """One distinct target a typed name matched, how, and how many events it has in the window."""

    kind: str
    id: str
    name: str
    service: str
    how: str
    events: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form for answers."""
        return {"kind": self.kind, "id": self.id, "name": self.name, "service": self.service,
                "how": self.how, "events": self.events}


def matches(typed: str, rows: Iterable[Mapping[str, Any]]) -> list[Match]:
    """The distinct targets among ``rows`` (``target_kind``, ``target_id``, ``target_name``,
    ``target_service``, ``events``) that ``typed`` names, strongest match first, then most events."""
    order = ("target.id", "kind:name", "target.name", "last segment", "target.service")
    found: dict[tuple[str, str], Match] = {}
    for r in rows:
        kind, tid = str(r["target_kind"]), str(r["target_id"])
        name, service = str(r.get("target_name") or ""), str(r.get("target_service") or "")
        how = how_matched(typed, kind, tid, name, service)
        if not how:
            continue
        old = found.get((kind, tid))
        n = int(r.get("events", 1)) + (old.events if old else 0)
        best = how if old is None or order.index(how) < order.index(old.how) else old.how
        found[(kind, tid)] = Match(kind, tid, name or (old.name if old else ""), service, best, n)
    return sorted(found.values(), key=lambda m: (order.index(m.how), -m.events, m.kind, m.id))


def grouped(found: Iterable[Match]) -> dict[str, list[Match]]:
    """Matches grouped by how they matched (the strongest kind of match first)."""
    out: dict[str, list[Match]] = {}
    for m in found:
        out.setdefault(m.how, []).append(m)
    return out
