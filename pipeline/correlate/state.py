"""The correlation state and its serialised form.

In memory
---------
:class:`State` holds, for one scope (tenant):

``keys``: ``{link key: [chain_ref, times, id_1, ..., id_n]}`` -- one flat list per *live* key:

- ``chain_ref``: a chain id that was the key's chain root when the key was last touched; it may
  since have been aliased, so it is resolved through ``parent`` (and refreshed when touched).
- ``times``: ``array('q', [deadline_us, t_1, ..., t_n])``. ``deadline_us`` is ``latest event time
  + ttl`` of the key's type (:data:`NEVER` if the type never expires); the key is dead once
  ``deadline_us < now``. ``t_j`` is the time in µs of the key's ``j``-th remembered event.
- ``id_1 ... id_n``: the ids of the remembered events (``rec[j + 1]`` goes with ``times[j]``).

The remembered events are sorted by ``(time, id)`` and are at most ``max_per_key`` (the newest).
This layout costs per key one list, one ``array`` and the key string, plus 16 bytes per
remembered event and its id string (shared with the event's other keys): no tuple, int or
``None`` object per event or per deadline.

``parent``: ``{chain id: chain id}`` union-find links of chains that lost a merge (or were
overtaken by an earlier head); kept only while a live key may still refer to the losing id and
dropped by compaction (see :mod:`pipeline.correlate.reducer`).

``heads``: ``{root chain id: head time_us}``: the live chains. A chain's id is its earliest
event's id, so the head is ``(heads[id], id)`` and chains compare by that pair.

``next_sweep_us`` / ``steps_since_sweep``: the amortised expiry schedule (part of the state so a
restarted worker sweeps exactly when an uninterrupted one would).

Events without links, and chains none of whose keys are live, take no memory at all.

Serialised (:func:`encode_state` / :func:`decode_state`)
--------------------------------------------------------
msgpack (msgspec) of the array-like struct ``[version, next_sweep_us, steps_since_sweep, keys,
heads, parent]`` where ``keys`` is a list of ``[key, chain_ref, times, [id_1..id_n]]`` in the
state's key order, ``times`` being the key's ``[deadline_us, t_1..t_n]`` as little-endian signed
64-bit integers (msgpack bin; ``deadline_us`` is 2**63-1 for never), ``heads`` is ``{chain id:
head time_us}`` and ``parent`` is ``{chain id: chain id}``. The encoding is exact, not canonical: a decoded state
behaves exactly like the encoded one in every case, compaction schedule included, so a restarted
worker emits exactly what an uninterrupted one would (``parent`` and lingering ``heads`` are
bounded by compaction to about twice the live keys). The configuration is not encoded; pass it
to :func:`decode_state`. ``version`` is 1.

Changes per key (what the worker persists)
------------------------------------------
The worker does not write whole states: :meth:`State.take_changes` returns, since its previous
call, one record per changed link key (:func:`encode_key`: ``[chain_ref, times, ids]``) and per
changed chain (:func:`encode_chain`: ``[head_us, parent]``, one of them None), ``None`` for a key
or chain that is gone. The step, the sweep and the compaction mark what they touch
(``dirty_keys``, ``dirty_chains``). Folding every call's records in order, the latest per name,
and :func:`state_from_records` rebuild the state exactly; :mod:`pipeline.correlate.partition`
wraps them into the per-partition changelog the worker commits with its offsets. The whole-state
encoding above is kept for tests and benchmarks.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

import msgspec

from pipeline.correlate.config import CorrelationConfig

FORMAT_VERSION = 1

KeyRecord = list[Any]
"""``[chain_ref: str, times: array('q', [deadline_us, t_1, ..., t_n]), id_1: str, ..., id_n: str]``."""

NEVER = 2**63 - 1
"""Deadline of a key that never expires."""


class State:
    """Correlation state of one scope. Mutated in place by :func:`~pipeline.correlate.step`."""

    __slots__ = ("config", "dirty_chains", "dirty_keys", "heads", "keys", "next_sweep_us", "parent",
                 "steps_since_sweep")

    def __init__(self, config: CorrelationConfig | None = None) -> None:
        self.config = config if config is not None else CorrelationConfig()
        self.keys: dict[str, KeyRecord] = {}
        self.parent: dict[str, str] = {}
        self.heads: dict[str, int] = {}
        self.next_sweep_us = 0
        self.steps_since_sweep = 0
        # What changed since the last take_changes(): link keys and chain ids (a superset).
        self.dirty_keys: set[str] = set()
        self.dirty_chains: set[str] = set()

    def take_changes(self) -> tuple[dict[str, bytes | None], dict[str, bytes | None]]:
        """The key and chain records (:func:`encode_key` / :func:`encode_chain`; ``None``: the key
        or chain is gone) that changed since the previous call, and forget them. Folding every
        call's records in order with :func:`state_from_records` rebuilds this state exactly."""
        keys = self.keys
        heads = self.heads
        parent = self.parent
        out_keys = {k: (None if (rec := keys.get(k)) is None else encode_key(rec)) for k in self.dirty_keys}
        out_chains = {c: encode_chain(heads.get(c), parent.get(c)) for c in self.dirty_chains}
        self.dirty_keys = set()
        self.dirty_chains = set()
        return out_keys, out_chains

    def __repr__(self) -> str:
        return f"<State keys={len(self.keys)} chains={len(self.heads)} aliases={len(self.parent)}>"

    def chain_of_key(self, key: str) -> str | None:
        """The current chain id of a live key (``None`` if the key is not live). Read-only."""
        rec = self.keys.get(key)
        return None if rec is None else root_of(self.parent, rec[0])

    def events_of_key(self, key: str) -> list[tuple[int, str]]:
        """The remembered ``(time_us, event_id)`` of a key, oldest first."""
        rec = self.keys.get(key)
        return [] if rec is None else list(zip(rec[1][1:], rec[2:], strict=True))

    def snapshot(self) -> dict[str, Any]:
        """What the state means, independent of its union-find history: every live key with its
        current chain (resolved), deadline and remembered events, and the head time of each
        chain a live key belongs to. For tests and debugging."""
        keys = {}
        heads = {}
        for key, rec in self.keys.items():
            root = root_of(self.parent, rec[0])
            heads[root] = self.heads[root]
            deadline = rec[1][0]
            keys[key] = {
                "chain": root,
                "deadline_us": None if deadline == NEVER else deadline,
                "events": self.events_of_key(key),
            }
        return {"keys": keys, "heads": heads}


def root_of(parent: dict[str, str], chain_id: str) -> str:
    """Root of ``chain_id`` without modifying ``parent``."""
    while (nxt := parent.get(chain_id)) is not None:
        chain_id = nxt
    return chain_id


def _sorted(times: array, ids: list[str]) -> bool:
    """Whether ``(times[j + 1], ids[j])`` strictly increase."""
    prev_t = times[1]
    prev_id = ids[0]
    for j in range(1, len(ids)):
        t = times[j + 1]
        i = ids[j]
        if t < prev_t or (t == prev_t and i <= prev_id):
            return False
        prev_t, prev_id = t, i
    return True


def root_of_checked(parent: dict[str, str], chain_id: str) -> str:
    """:func:`root_of` that raises ``ValueError`` on a cycle (decoding untrusted bytes)."""
    for _ in range(len(parent) + 1):
        nxt = parent.get(chain_id)
        if nxt is None:
            return chain_id
        chain_id = nxt
    raise ValueError(f"corrupt correlation state: alias cycle through {chain_id!r}")


class _KeyWire(msgspec.Struct, array_like=True, gc=False):
    key: str
    chain: str
    times: bytes
    ids: list[str]


class _StateWire(msgspec.Struct, array_like=True):
    version: int
    next_sweep_us: int
    steps_since_sweep: int
    keys: list[_KeyWire]
    heads: dict[str, int]
    parent: dict[str, str]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_StateWire)


class _KeyRec(msgspec.Struct, array_like=True, gc=False):
    chain: str
    times: bytes
    ids: list[str]


class _ChainRec(msgspec.Struct, array_like=True, gc=False):
    head_us: int | None
    parent: str | None


_key_decoder = msgspec.msgpack.Decoder(_KeyRec)
_chain_decoder = msgspec.msgpack.Decoder(_ChainRec)


def _times_bytes(times: array) -> bytes:
    if sys.byteorder != "little":
        times = array("q", times)
        times.byteswap()
    return times.tobytes()


def encode_key(rec: KeyRecord) -> bytes:
    """One key's record, msgpack ``[chain_ref, times (LE int64 bytes), [ids]]``."""
    return _encoder.encode(_KeyRec(rec[0], _times_bytes(rec[1]), rec[2:]))


def encode_chain(head_us: int | None, parent: str | None) -> bytes | None:
    """One chain's record, msgpack ``[head_us, parent]`` (one of them None); None if neither."""
    if head_us is None and parent is None:
        return None
    return _encoder.encode(_ChainRec(head_us, parent))


def state_from_records(
    keys: dict[str, bytes],
    chains: dict[str, bytes],
    next_sweep_us: int,
    steps_since_sweep: int,
    config: CorrelationConfig | None = None,
) -> State:
    """Rebuild a :class:`State` from the latest record of each key and chain (as written by
    :meth:`State.take_changes`, tombstones already applied). ``ValueError`` naming the record
    if they do not form a consistent state."""
    state = State(config)
    state.next_sweep_us = next_sweep_us
    state.steps_since_sweep = steps_since_sweep
    heads = state.heads
    parent = state.parent
    try:
        for c, data in chains.items():
            rec = _chain_decoder.decode(data)
            if (rec.head_us is None) == (rec.parent is None):
                raise ValueError(f"corrupt correlation state: chain {c!r} is both or neither head and alias")
            if rec.head_us is not None:
                heads[c] = rec.head_us
            else:
                parent[c] = rec.parent  # type: ignore[assignment]
        for c in parent:
            if root_of_checked(parent, c) not in heads:
                raise ValueError(f"corrupt correlation state: chain {c!r} leads to no head")
        for k, data in keys.items():
            kr = _key_decoder.decode(data)
            state.keys[k] = _key_record(k, kr.chain, kr.times, kr.ids, heads, parent)
    except msgspec.DecodeError as exc:
        raise ValueError(f"corrupt correlation state record: {exc}") from None
    return state


def encode_state(state: State) -> bytes:
    """Serialise ``state`` (format in the module docstring). Does not modify ``state``."""
    swap = sys.byteorder != "little"
    keys = []
    for key, rec in state.keys.items():
        times = rec[1]
        if swap:
            times = array("q", times)
            times.byteswap()
        keys.append(_KeyWire(key, rec[0], times.tobytes(), rec[2:]))
    wire = _StateWire(
        FORMAT_VERSION, state.next_sweep_us, state.steps_since_sweep, keys, state.heads, state.parent
    )
    return _encoder.encode(wire)


def decode_state(data: bytes, config: CorrelationConfig | None = None) -> State:
    """Rebuild a :class:`State` from :func:`encode_state` bytes; ``ValueError`` if corrupt."""
    try:
        wire = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a correlation state: {exc}") from None
    if wire.version != FORMAT_VERSION:
        raise ValueError(f"correlation state version {wire.version}, expected {FORMAT_VERSION}")
    state = State(config)
    state.next_sweep_us = wire.next_sweep_us
    state.steps_since_sweep = wire.steps_since_sweep
    state.heads = heads = wire.heads
    state.parent = parent = wire.parent
    for c in parent:
        if root_of_checked(parent, c) not in heads:
            raise ValueError(f"corrupt correlation state: chain {c!r} leads to no head")
    keys = state.keys
    for k in wire.keys:
        if k.key in keys:
            raise ValueError(f"corrupt correlation state: key {k.key!r} twice")
        keys[k.key] = _key_record(k.key, k.chain, k.times, k.ids, heads, parent)
    return state


def _key_record(
    key: str, chain: str, times_bytes: bytes, ids: list[str], heads: dict[str, int], parent: dict[str, str]
) -> KeyRecord:
    """A key's in-memory record from its serialised fields; ``ValueError`` if they are inconsistent."""
    times = array("q")
    if len(times_bytes) % 8:
        raise ValueError(f"corrupt correlation state: times of key {key!r}")
    times.frombytes(times_bytes)
    if sys.byteorder != "little":
        times.byteswap()
    if not ids or len(times) != len(ids) + 1 or not _sorted(times, ids):
        raise ValueError(f"corrupt correlation state: events of key {key!r}")
    if chain not in heads and chain not in parent:
        raise ValueError(f"corrupt correlation state: chain {chain!r} of key {key!r} is unknown")
    return [chain, times, *ids]
