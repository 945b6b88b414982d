"""The identity map: configured people plus learned joins, and who a principal is (pure).

Building (:meth:`IdentityMap.build`) is a union-find over principals:

1. Every configured person's principals are one set, owned by that person.
2. Learned joins are applied in canonical order -- stronger first (``asserted`` before
   ``claimed``), then by content (:attr:`Join.sort_key`) -- so the result depends only on the
   *set* of joins, never on the order they arrived in. For each principal pair only its best
   evidence is kept (the first in that order).
3. A join that would merge two configured people is refused and kept in
   :attr:`IdentityMap.conflicts`: configuration is authoritative, data only adds to it.

A set owned by a configured person is that person; a set of two or more principals reached only
by joins is an unnamed person whose id is its lexicographically smallest principal. A principal
that nobody configured and no join touched has no person.

Lookups explain themselves: :attr:`Person.via` is the chain of steps from the principal that was
looked up to the person -- a shortest path over accepted joins, using ``asserted`` joins alone
when they suffice -- ending, for a configured person, in the ``identities.yaml`` step. Each step
carries its assurance (``configured``, ``asserted-by-github``, ``claimed``...) and evidence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.identity.config import IdentityConfig
from pipeline.identity.learn import STRENGTHS, Join, Strength
from pipeline.identity.principals import ActorLike, normalize, principals_from, principals_of

CONFIGURED = "configured"


@dataclass(frozen=True)
class Step:
    """One step of a match: ``principal`` -> ``to`` (a principal, or the person id for the
    ``identities.yaml`` step), with its ``assurance`` and ``evidence`` (an event id, or the
    configuration file) and the ``rule`` that learned it."""

    principal: str
    to: str
    assurance: str
    evidence: str
    rule: str

    def as_dict(self) -> dict[str, str]:
        """JSON-friendly form for query rows."""
        return {
            "from": self.principal,
            "to": self.to,
            "assurance": self.assurance,
            "evidence": self.evidence,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class Person:
    """One person: ``id`` (configured id, or the smallest principal of an unnamed person),
    ``name``, every principal known to be theirs (sorted), whether the configuration declares
    them, and ``via``: how the principal that was looked up leads to them."""

    id: str
    name: str
    principals: tuple[str, ...]
    configured: bool
    via: tuple[Step, ...] = ()

    @property
    def assurance(self) -> str:
        """The weakest step of ``via`` (``configured`` for a direct configuration match;
        ``self`` when the principal looked up is the unnamed person's own id)."""
        if not self.via:
            return CONFIGURED if self.configured else "self"
        return min((s.assurance for s in self.via), key=_assurance_rank)

    def via_text(self) -> str:
        """``via`` in one line: ``git:a@x -[asserted-by-github]-> github:a -[configured]-> alice``."""
        if not self.via:
            return self.id
        parts = [self.via[0].principal]
        for step in self.via:
            parts.append(f"-[{step.assurance}]-> {step.to}")
        return " ".join(parts)


def _assurance_rank(assurance: str) -> int:
    # Lower is weaker: claimed < asserted-by-* < configured.
    if assurance == "claimed":
        return 0
    if assurance.startswith("asserted"):
        return 1
    return 2


@dataclass(frozen=True)
class Conflict:
    """A learned join refused because it would merge two configured people."""

    join: Join
    people: tuple[str, str]


@dataclass
class _UnionFind:
    parent: dict[str, str] = field(default_factory=dict)

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, x: str, y: str) -> str:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            # Deterministic root: the smaller string (any fixed rule would do).
            low, high = sorted((rx, ry))
            self.parent[high] = low
            rx = low
        return rx


class IdentityMap:
    """Who each principal is. Build with :meth:`build`; immutable afterwards."""

    def __init__(
        self,
        config: IdentityConfig,
        members: Mapping[str, tuple[str, ...]],
        component: Mapping[str, str],
        owner: Mapping[str, str | None],
        edges: Mapping[str, tuple[tuple[str, Join], ...]],
        joins: tuple[Join, ...],
        conflicts: tuple[Conflict, ...],
    ) -> None:
        self.config = config
        self._members = members
        self._component = component
        self._owner = owner
        self._edges = edges
        #: The joins that shaped the map (best evidence per pair), in the order applied.
        self.joins = joins
        #: Joins refused because they would merge two configured people.
        self.conflicts = conflicts

    @classmethod
    def build(
        cls,
        config: IdentityConfig | None = None,
        joins: Iterable[Join] = (),
        *,
        strengths: Iterable[Strength] = STRENGTHS,
    ) -> IdentityMap:
        """The map of ``config`` plus the ``joins`` whose strength is in ``strengths``.

        Deterministic: the same config and the same set of joins give the same map, in any order.
        """
        config = config or IdentityConfig()
        allowed = set(strengths)
        best: dict[tuple[str, str], Join] = {}
        for j in sorted(joins, key=lambda j: j.sort_key):
            if j.strength in allowed:
                best.setdefault((j.a, j.b), j)
        ordered = sorted(best.values(), key=lambda j: j.sort_key)

        uf = _UnionFind()
        person_of_root: dict[str, str] = {}
        for person in sorted(config.people.values(), key=lambda p: p.id):
            for principal in person.principals:
                uf.union(person.principals[0], principal)
            if person.principals:
                person_of_root[uf.find(person.principals[0])] = person.id

        accepted: list[Join] = []
        conflicts: list[Conflict] = []
        for j in ordered:
            ra, rb = uf.find(j.a), uf.find(j.b)
            pa, pb = person_of_root.get(ra), person_of_root.get(rb)
            if ra != rb and pa is not None and pb is not None:
                conflicts.append(Conflict(j, (pa, pb)))
                continue
            root = uf.union(j.a, j.b)
            owner_id = pa or pb
            person_of_root.pop(ra, None)
            person_of_root.pop(rb, None)
            if owner_id is not None:
                person_of_root[root] = owner_id
            accepted.append(j)

        groups: dict[str, list[str]] = {}
        for principal in list(uf.parent):
            groups.setdefault(uf.find(principal), []).append(principal)
        members: dict[str, tuple[str, ...]] = {}
        component: dict[str, str] = {}
        owner: dict[str, str | None] = {}
        for root, items in groups.items():
            key = min(items)  # the component's stable name, independent of the root chosen
            members[key] = tuple(sorted(items))
            owner[key] = person_of_root.get(root)
            for principal in items:
                component[principal] = key
        edges: dict[str, list[tuple[str, Join]]] = {}
        for j in accepted:
            edges.setdefault(j.a, []).append((j.b, j))
            edges.setdefault(j.b, []).append((j.a, j))
        frozen_edges = {p: tuple(sorted(v, key=lambda e: (e[0], e[1].sort_key))) for p, v in edges.items()}
        return cls(config, members, component, owner, frozen_edges, tuple(accepted), tuple(conflicts))

    # -- lookups --------------------------------------------------------------------------

    def person_of(self, who: str | ActorLike) -> Person | None:
        """The person behind a principal (any spelling :func:`normalize` accepts) or an actor
        (its principals in :func:`principals_of` order; the first with a person wins)."""
        if isinstance(who, str):
            candidates: tuple[str, ...] = tuple(p for p in (normalize(who),) if p)
        else:
            candidates = principals_of(who)
        return self._first(candidates)

    def person_of_ids(self, actor_id: str, principal: str = "") -> Person | None:
        """:meth:`person_of` for an actor known by its ``id`` and raw ``principal`` (query rows)."""
        return self._first(principals_from(actor_id, principal))

    def _first(self, candidates: Iterable[str]) -> Person | None:
        for principal in candidates:
            found = self._person(principal)
            if found is not None:
                return found
        return None

    def _person(self, principal: str) -> Person | None:
        key = self._component.get(principal)
        if key is None:
            return None
        owner_id = self._owner.get(key)
        members = self._members[key]
        if owner_id is not None:
            declared = self.config.people[owner_id]
            targets = set(declared.principals)
            path = self._path(principal, targets)
            via = (
                *path,
                Step(
                    path[-1].to if path else principal,
                    owner_id,
                    CONFIGURED,
                    self.config.origin,
                    "identities.yaml",
                ),
            )
            return Person(owner_id, declared.name, members, True, via)
        if len(members) < 2:
            return None
        return Person(key, key, members, False, self._path(principal, {key}))

    def _path(self, start: str, targets: set[str]) -> tuple[Step, ...]:
        """Shortest chain of accepted joins from ``start`` to any of ``targets``; ``asserted``
        joins alone when they reach, so a weaker step is shown only when it is needed."""
        if start in targets:
            return ()
        for allowed in (("asserted",), STRENGTHS):
            found = self._bfs(start, targets, set(allowed))
            if found is not None:
                return found
        return ()  # unreachable: start and targets are in one component

    def _bfs(self, start: str, targets: set[str], allowed: set[str]) -> tuple[Step, ...] | None:
        back: dict[str, tuple[str, Join] | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if node in targets:
                steps: list[Step] = []
                while (prev := back[node]) is not None:
                    before, j = prev
                    steps.append(Step(before, node, j.assurance, j.event_id, j.rule))
                    node = before
                return tuple(reversed(steps))
            for nxt, j in self._edges.get(node, ()):
                if nxt not in back and j.strength in allowed:
                    back[nxt] = (node, j)
                    queue.append(nxt)
        return None

    def people(self) -> list[Person]:
        """Every person (configured or unnamed), sorted by id, without ``via``."""
        out: list[Person] = []
        seen: set[str] = set()
        for key, members in sorted(self._members.items()):
            owner_id = self._owner.get(key)
            if owner_id is not None:
                declared = self.config.people[owner_id]
                out.append(Person(owner_id, declared.name, members, True))
                seen.add(owner_id)
            elif len(members) >= 2:
                out.append(Person(key, key, members, False))
        for pid, declared in self.config.people.items():
            if pid not in seen:  # declared without principals
                out.append(Person(pid, declared.name, (), True))
        return sorted(out, key=lambda p: p.id)


def person_summary(person: Person | None) -> dict[str, Any] | None:
    """The ``person`` value of a query row: ``{"id", "name", "assurance", "via": [steps]}``."""
    if person is None:
        return None
    return {
        "id": person.id,
        "name": person.name,
        "assurance": person.assurance,
        "via": [s.as_dict() for s in person.via],
    }


def annotate(row: Mapping[str, Any], imap: IdentityMap) -> dict[str, Any]:
    """A copy of a query ``row`` with ``"person"`` added (see :func:`person_summary`).

    Reads ``actor_id`` and, when the row has it, ``actor_principal`` (needed for Kubernetes
    impersonation, where the authenticated user is only in the principal, and for the role
    session ARN behind an AWS ``sourceIdentity``). Rows without ``actor_id`` get ``None``.
    """
    out = dict(row)
    actor_id = row.get("actor_id")
    principal = row.get("actor_principal") or ""
    if not isinstance(actor_id, str) or not actor_id:
        out["person"] = None
        return out
    out["person"] = person_summary(
        imap.person_of_ids(actor_id, principal if isinstance(principal, str) else "")
    )
    return out
