"""The person the worker puts on each ``<prefix>.chains`` record: cheap, from what it already has.

The worker knows the declared people (``identities.yaml``), the joins stored so far (read once at
start) and the joins each batch proves (:func:`pipeline.stream.ingest.learn_joins`, learned before
the batch's persons are looked up, so the event that proves a join already carries its person).
The identity map is rebuilt only when a join between a new pair of principals shows up (the same
pair seen in every push of one person does not count), and lookups are cached per actor.

``person`` is the :class:`~pipeline.identity.Person` id: the configured person's id, else the
id of an unnamed person (two or more principals joined by data: its smallest principal), else
``None`` (a principal nobody declared and no join touched; rules then group by the actor id).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import CauselogError
from pipeline.identity import IdentityConfig, IdentityMap, Join, load_identities
from pipeline.store.client import Store
from pipeline.store.identities import read_joins

log = logging.getLogger("causelog.worker")


class People:
    """Who is behind an actor, as far as the worker knows now. Used by one thread at a time."""

    def __init__(self, config: IdentityConfig | None = None, joins: Iterable[Join] = ()) -> None:
        self.config = config or IdentityConfig()
        self._joins: dict[tuple[str, str, str, str, str], Join] = {}
        self._map: IdentityMap | None = None
        self._cache: dict[tuple[str, str], str | None] = {}
        self.learn(joins)

    @classmethod
    def load(cls, store: Store, path: Path) -> People:
        """The people of ``identities.yaml`` at ``path`` (absent: none) and every stored join. A
        bad file is logged (with the reason) and left out: persons then come from joins only."""
        try:
            config = load_identities(path)
        except CauselogError as exc:
            log.error("%s; persons on <prefix>.chains come from learned joins only", exc)
            config = IdentityConfig()
        return cls(config, read_joins(store))

    def learn(self, joins: Iterable[Join]) -> None:
        """Add joins; the map is rebuilt at the next lookup if a new pair of principals came in."""
        for j in joins:
            key = (j.a, j.b, j.strength, j.system, j.rule)
            if key not in self._joins:
                self._joins[key] = j
                self._map = None

    def person(self, actor_id: str, principal: str = "") -> str | None:
        """The person id behind an actor (its ``id`` and raw ``principal``), or ``None``."""
        if self._map is None:
            self._map = IdentityMap.build(self.config, self._joins.values())
            self._cache.clear()
        key = (actor_id, principal)
        if key not in self._cache:
            if len(self._cache) >= 200_000:  # many one-off actors: keep memory bounded
                self._cache.clear()
            found = self._map.person_of_ids(actor_id, principal)
            self._cache[key] = found.id if found is not None else None
        return self._cache[key]
