"""What the reducer emits, and how a reader folds emissions back into chains.

Every emission is a frozen msgspec struct tagged with ``kind`` so a list of them encodes to JSON
or msgpack and decodes back into the right types (:data:`Emission`, :func:`encode_emissions`,
:func:`decode_emissions`).

- :class:`Member`: an event joined a chain. ``chain_id`` is the chain's id *when the event
  arrived*; later :class:`Alias` records may point that id elsewhere, so readers always
  :func:`resolve` it.
- :class:`Alias`: chain ``old_chain_id`` is now part of chain ``new_chain_id``. Written when two
  chains merge (the older head wins) and when an out-of-order event older than a chain's head
  arrives (it becomes the head, the old head id points to it). The target is always strictly
  older by ``(time, id)`` than the source, so aliases never form a cycle, and every id is aliased
  at most once.
- :class:`Edge`: ``from_event`` (the later event) points to ``to_event``, its predecessor on
  ``key``. ``time_us`` is the time of ``from_event``.
- :class:`EdgeRemoved`: retracts an earlier :class:`Edge` with the same fields; written when an
  out-of-order event lands between two events of a key (the retracted edge is then replaced by
  two new ones through the new event).
- :class:`Expired`: ``key`` is forgotten; a later event carrying it starts afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec


class Member(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="member"):
    event_id: str
    chain_id: str


class Alias(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="alias"):
    old_chain_id: str
    new_chain_id: str


class Edge(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="edge"):
    key: str
    key_type: str
    from_event: str
    to_event: str
    time_us: int


class EdgeRemoved(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="edge_removed"):
    key: str
    key_type: str
    from_event: str
    to_event: str
    time_us: int


class Expired(msgspec.Struct, frozen=True, gc=False, tag_field="kind", tag="expired"):
    key: str


Emission = Member | Alias | Edge | EdgeRemoved | Expired

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[Emission])


def encode_emissions(emissions: Iterable[Emission]) -> bytes:
    """JSON array of tagged emissions (``{"kind": "member", ...}``)."""
    return _encoder.encode(list(emissions))


def decode_emissions(data: bytes | str) -> list[Emission]:
    """Inverse of :func:`encode_emissions`."""
    return _decoder.decode(data)


def resolve(aliases: Mapping[str, str], chain_id: str) -> str:
    """The current id of a chain: follow ``aliases`` (old id -> new id) transitively.

    Raises ``ValueError`` on a cycle, which the reducer never writes.
    """
    seen = 0
    limit = len(aliases)
    while (nxt := aliases.get(chain_id)) is not None:
        chain_id = nxt
        seen += 1
        if seen > limit:
            raise ValueError(f"alias cycle through {chain_id!r}")
    return chain_id


@dataclass
class ChainView:
    """A reader's materialisation of emissions: membership, aliases and the live edges.

    This is what the store does with the ``Member``/``Alias``/``Edge`` rows; tests use it to check
    the reducer against the offline reference.
    """

    members: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    edges: set[tuple[str, str, str]] = field(default_factory=set)
    """Live edges as ``(key, from_event, to_event)``."""
    expired: list[str] = field(default_factory=list)

    def apply(self, emissions: Iterable[Emission]) -> ChainView:
        for e in emissions:
            if isinstance(e, Member):
                self.members[e.event_id] = e.chain_id
            elif isinstance(e, Alias):
                prev = self.aliases.setdefault(e.old_chain_id, e.new_chain_id)
                if prev != e.new_chain_id:
                    raise ValueError(f"chain {e.old_chain_id!r} aliased twice: {prev!r}, {e.new_chain_id!r}")
            elif isinstance(e, Edge):
                self.edges.add((e.key, e.from_event, e.to_event))
            elif isinstance(e, EdgeRemoved):
                self.edges.remove((e.key, e.from_event, e.to_event))
            else:
                self.expired.append(e.key)
        return self

    def chain_of(self, event_id: str) -> str:
        """The resolved chain id of an event (KeyError if the event was never seen)."""
        return resolve(self.aliases, self.members[event_id])

    def chains(self) -> dict[str, str]:
        """Every seen event with its resolved chain id."""
        return {ev: resolve(self.aliases, c) for ev, c in self.members.items()}
