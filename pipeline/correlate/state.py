"""The correlation state and its serialised form.

In memory
---------
:class:`State` holds, for one scope (tenant):

``buckets``: ``{key type: {rest of the key: record}}`` (a key ``trace:abc`` is ``buckets["trace"]
["abc"]``; a key without ``:`` is in ``buckets[None]``), one immutable ``bytes`` record per *live*
key, holding what the key remembers: ``chain_ref``, its ``deadline_us`` and its remembered events
``(t_1, id_1) ... (t_n, id_n)``, sorted by ``(time, id)``, at most ``max_per_key`` (the newest).
Per type, each key string is shorter by its type and each dict smaller (a dict of at most 2**15
slots has 2-byte indexes); no bucket is ever empty (so the bucket order, hence the encoded key
order, is the same after a restore); the sweep copies a bucket that expiries left sparse (a dict
never shrinks by itself). ``live`` counts the keys; :attr:`State.keys` builds ``{link key:
record}`` (tests, debugging).

- ``chain_ref``: a chain id that was the key's chain root when the key was last touched; it may
  since have been aliased, so it is resolved through ``parent`` (and refreshed when touched).
- ``deadline_us``: ``latest event time + ttl`` of the key's type (:data:`NEVER` if the type never
  expires); the key is dead once ``deadline_us < now``. Not stored when it is exactly what the
  configuration gives (``t_n + ttl``), which is always the case unless the key was restored from
  a changelog written with another TTL (then it is stored until the key's next newest event).

A record is in one of two layouts (its first byte says which):

- *packed* (every id of the record is 32 lowercase hex digits, as :func:`pipeline.model.event_id`
  makes them, and times are in ``[0, 2**56)``): ``u64 LE (t_n << 8 | flags)``, [``i64 deadline``
  if stored], ``chain_ref`` as 16 bytes, then ``id_1, gap_1, id_2, ..., gap_{n-1}, id_n``: ids as
  16 bytes, ``gap_j = t_{j+1} - t_j`` as u32 (u64 if a gap needs it). 20 bytes per remembered
  event, 24 per key, no Python object but the ``bytes`` itself: appending an event is one
  concatenation.
- *general* (any other id): ``\x00`` then msgpack ``[deadline_us, chain_ref, [t_1..t_n],
  [id_1..id_n]]``.

:func:`unpack_key` / :func:`pack_key` convert between a record and its fields; the reducer
appends to packed records, and splices out-of-order events into them, without unpacking them.
Keys stay ``str`` (a ``str``-keyed dict costs 8 bytes less per slot than any other).

Cost (``tests/bench/bench_correlate.py``, 200,000 events, 6.4 remembered events per key): about
285 bytes per live key -- the record ~180 (33 of ``bytes`` object, 24 of header and chain ref,
20 per event less 4), its key string ~67, dict slots ~40 -- against ~810 with a list, an
``array`` and the id strings per key (before 2026-12).

Serialised (:func:`encode_state` / :func:`decode_state`)
--------------------------------------------------------
msgpack (msgspec) of the array-like struct ``[version, next_sweep_us, steps_since_sweep, keys,
heads, parent]`` where ``keys`` is a list of ``[key, chain_ref, times, [id_1..id_n]]`` in the
state's key order, ``times`` being the key's ``[deadline_us, t_1..t_n]`` as little-endian signed
64-bit integers (msgpack bin; ``deadline_us`` is 2**63-1 for never), ``heads`` is ``{chain id:
head time_us}`` and ``parent`` is ``{chain id: chain id}``. The encoding is exact, not canonical: a decoded state
behaves exactly like the encoded one in every case, compaction schedule included, so a restarted
worker emits exactly what an uninterrupted one would (``parent`` is bounded by compaction to a
sixteenth of the live keys plus 256, ``parent`` and lingering ``heads`` together to twice the live
keys plus 1024). The configuration is not encoded; pass it
to :func:`decode_state`. ``version`` is 1.

Changes per key (what the worker persists)
------------------------------------------
The worker does not write whole states: :meth:`State.take_changes` returns, since its previous
call, one record per changed link key (:func:`encode_key`: ``[chain_ref, times, ids]``, the same bytes
whatever the in-memory layout: changelogs written before the packed records restore unchanged) and per
changed chain (:func:`encode_chain`: ``[head_us, parent]``, one of them None), ``None`` for a key
or chain that is gone. The step, the sweep and the compaction mark what they touch
(``dirty_keys``, ``dirty_chains``). Folding every call's records in order, the latest per name,
and :func:`state_from_records` rebuild the state exactly; :mod:`pipeline.correlate.partition`
wraps them into the per-partition changelog the worker commits with its offsets. The whole-state
encoding above is kept for tests and benchmarks.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from typing import Any

import msgspec

from pipeline.correlate.config import CorrelationConfig

FORMAT_VERSION = 1

KeyRecord = bytes
"""A key's in-memory record (layouts in the module docstring)."""

NEVER = 2**63 - 1
"""Deadline of a key that never expires."""

# Flags in the low byte of a packed record's header (a general record starts with 0).
PACKED = 1
WIDE = 2
"""Gaps are u64 (else u32)."""
DEADLINE = 4
"""The deadline is stored (i64 after the header), not derived from the newest time and the TTL."""
TIME_LIMIT = 1 << 56
"""Packed records hold times in ``[0, TIME_LIMIT)`` (year 1970 to 4253)."""
GAP_LIMIT = 1 << 32

header = struct.Struct("<Q").unpack_from
"""``header(rec) -> (t_n << 8 | flags,)`` of a packed record."""
_i64 = struct.Struct("<q")
_gap_formats: dict[tuple[int, bool], struct.Struct] = {}


def hex16(value: str) -> bytes | None:
    """The 16 bytes of a 32-digit lowercase hex id, ``None`` for any other string."""
    # fromhex also takes upper case and whitespace: lower case (or digits only) and 16 bytes out
    # of 32 characters rule both out.
    if len(value) != 32 or not (value.islower() or value.isdigit()):
        return None
    try:
        packed = bytes.fromhex(value)
    except ValueError:
        return None
    return packed if len(packed) == 16 else None


def derived_deadline(newest: int, ttl: int | None) -> int:
    """The deadline the configuration gives a key whose newest event is at ``newest``."""
    return NEVER if ttl is None else newest + ttl


def pack_key(chain: str, deadline: int, times: list[int], ids: list[str], ttl: int | None) -> bytes:
    """A key's record from its fields (``times``/``ids`` sorted, at least one); ``ttl``: of the
    key's type in the state's configuration (the deadline is stored only if it differs)."""
    newest = times[-1]
    packed_chain = hex16(chain)
    packed_ids = [hex16(i) for i in ids]
    if packed_chain is None or None in packed_ids or times[0] < 0 or newest >= TIME_LIMIT:
        return b"\x00" + _general_encoder.encode((deadline, chain, times, ids))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    wide = bool(gaps) and max(gaps) >= GAP_LIMIT
    flags = PACKED | (WIDE if wide else 0)
    stored = deadline != derived_deadline(newest, ttl)
    parts = [((newest << 8) | flags | (DEADLINE if stored else 0)).to_bytes(8, "little")]
    if stored:
        parts.append(_i64.pack(deadline))
    parts.append(packed_chain)
    parts.append(packed_ids[0])  # type: ignore[arg-type]
    width = 8 if wide else 4
    for gap, packed in zip(gaps, packed_ids[1:], strict=True):
        parts.append(gap.to_bytes(width, "little"))
        parts.append(packed)  # type: ignore[arg-type]
    return b"".join(parts)


def _gaps(rec: bytes, start: int, n: int, wide: bool) -> tuple[int, ...]:
    fmt = _gap_formats.get((n, wide))
    if fmt is None:
        fmt = _gap_formats[(n, wide)] = struct.Struct("<" + ("16xQ" if wide else "16xI") * n)
    return fmt.unpack_from(rec, start)


def unpack_key(rec: bytes, ttl: int | None) -> tuple[int, str, list[int], list[str]]:
    """``(deadline, chain_ref, times, ids)`` of a record (``ttl`` as for :func:`pack_key`)."""
    flags = rec[0]
    if not flags & PACKED:
        return _general_decoder.decode(memoryview(rec)[1:])
    newest = header(rec)[0] >> 8
    start = 8
    if flags & DEADLINE:
        deadline = _i64.unpack_from(rec, 8)[0]
        start = 16
    else:
        deadline = derived_deadline(newest, ttl)
    chain = rec[start : start + 16].hex()
    start += 16
    wide = bool(flags & WIDE)
    step = 24 if wide else 20
    ids = [rec[i : i + 16].hex() for i in range(start, len(rec), step)]
    times = [newest]
    t = newest
    for gap in reversed(_gaps(rec, start, len(ids) - 1, wide)):
        t -= gap
        times.append(t)
    times.reverse()
    return deadline, chain, times, ids


def deadline_of(rec: bytes, ttl: int | None) -> int:
    """A record's deadline."""
    flags = rec[0]
    if flags & DEADLINE:
        return _i64.unpack_from(rec, 8)[0]
    if flags & PACKED:
        return derived_deadline(header(rec)[0] >> 8, ttl)
    return _general_decoder.decode(memoryview(rec)[1:])[0]


def chain_ref(rec: bytes) -> str:
    """A record's chain ref."""
    flags = rec[0]
    if flags & PACKED:
        start = 16 if flags & DEADLINE else 8
        return rec[start : start + 16].hex()
    return _general_decoder.decode(memoryview(rec)[1:])[1]


def with_chain(rec: bytes, chain: str, ttl: int | None) -> bytes:
    """The record with its chain ref replaced."""
    flags = rec[0]
    packed = hex16(chain) if flags & PACKED else None
    if packed is None:
        deadline, _, times, ids = unpack_key(rec, ttl)
        return pack_key(chain, deadline, times, ids, ttl)
    start = 16 if flags & DEADLINE else 8
    return rec[:start] + packed + rec[start + 16 :]


_general_encoder = msgspec.msgpack.Encoder()
_general_decoder = msgspec.msgpack.Decoder(tuple[int, str, list[int], list[str]])


class State:
    """Correlation state of one scope. Mutated in place by :func:`~pipeline.correlate.step`.

    Live keys are kept per type: ``buckets[type][rest]`` for a key ``type:rest`` (``buckets[None]
    [key]`` for a key without ``:``): each key string is shorter by its type, and several smaller
    dicts cost less per entry than one big one. ``live`` counts them; :attr:`keys` is a copy."""

    __slots__ = ("buckets", "config", "dirty_chains", "dirty_keys", "heads", "live", "next_sweep_us", "parent",
                 "steps_since_sweep")

    def __init__(self, config: CorrelationConfig | None = None) -> None:
        self.config = config if config is not None else CorrelationConfig()
        self.buckets: dict[str | None, dict[str, KeyRecord]] = {}
        self.live = 0
        self.parent: dict[str, str] = {}
        self.heads: dict[str, int] = {}
        self.next_sweep_us = 0
        self.steps_since_sweep = 0
        # What changed since the last take_changes(): link keys and chain ids (a superset).
        self.dirty_keys: set[str] = set()
        self.dirty_chains: set[str] = set()

    @property
    def keys(self) -> dict[str, KeyRecord]:
        """Every live key with its record, in a new dict (for tests and debugging)."""
        return dict(self.items())

    def items(self) -> Iterator[tuple[str, KeyRecord]]:
        """``(link key, record)`` of every live key."""
        for bucket, recs in self.buckets.items():
            if bucket is None:
                yield from recs.items()
            else:
                prefix = bucket + ":"
                for rest, rec in recs.items():
                    yield prefix + rest, rec

    def get(self, key: str) -> KeyRecord | None:
        """The record of a live key, ``None`` if it is not live."""
        bucket, rest = split_key(key)
        recs = self.buckets.get(bucket)
        return None if recs is None else recs.get(rest)

    def put(self, key: str, rec: KeyRecord) -> None:
        """Set the record of a key."""
        bucket, rest = split_key(key)
        recs = self.buckets.get(bucket)
        if recs is None:
            recs = self.buckets[bucket] = {}
        if rest not in recs:
            self.live += 1
        recs[rest] = rec

    def take_changes(self) -> tuple[dict[str, bytes | None], dict[str, bytes | None]]:
        """The key and chain records (:func:`encode_key` / :func:`encode_chain`; ``None``: the key
        or chain is gone) that changed since the previous call, and forget them. Folding every
        call's records in order with :func:`state_from_records` rebuilds this state exactly."""
        get = self.get
        heads = self.heads
        parent = self.parent
        ttl_of = self.config.ttl_of
        out_keys = {k: (None if (rec := get(k)) is None else encode_key(rec, ttl_of(k))) for k in self.dirty_keys}
        out_chains = {c: encode_chain(heads.get(c), parent.get(c)) for c in self.dirty_chains}
        self.dirty_keys = set()
        self.dirty_chains = set()
        return out_keys, out_chains

    def __repr__(self) -> str:
        return f"<State keys={self.live} chains={len(self.heads)} aliases={len(self.parent)}>"

    def unpack(self, key: str) -> tuple[int, str, list[int], list[str]] | None:
        """``(deadline_us, chain_ref, times, ids)`` of a live key, ``None`` if not live."""
        rec = self.get(key)
        return None if rec is None else unpack_key(rec, self.config.ttl_of(key))

    def chain_of_key(self, key: str) -> str | None:
        """The current chain id of a live key (``None`` if the key is not live). Read-only."""
        rec = self.get(key)
        return None if rec is None else root_of(self.parent, chain_ref(rec))

    def events_of_key(self, key: str) -> list[tuple[int, str]]:
        """The remembered ``(time_us, event_id)`` of a key, oldest first."""
        fields = self.unpack(key)
        return [] if fields is None else list(zip(fields[2], fields[3], strict=True))

    def snapshot(self) -> dict[str, Any]:
        """What the state means, independent of its union-find history: every live key with its
        current chain (resolved), deadline and remembered events, and the head time of each
        chain a live key belongs to. For tests and debugging."""
        keys = {}
        heads = {}
        ttl_of = self.config.ttl_of
        for key, rec in self.items():
            deadline, chain, times, ids = unpack_key(rec, ttl_of(key))
            root = root_of(self.parent, chain)
            heads[root] = self.heads[root]
            keys[key] = {
                "chain": root,
                "deadline_us": None if deadline == NEVER else deadline,
                "events": list(zip(times, ids, strict=True)),
            }
        return {"keys": keys, "heads": heads}


def split_key(key: str) -> tuple[str | None, str]:
    """``(type, rest)`` of a link key ``type:rest``; ``(None, key)`` if it has no ``:``."""
    i = key.find(":")
    return (None, key) if i < 0 else (key[:i], key[i + 1 :])


def root_of(parent: dict[str, str], chain_id: str) -> str:
    """Root of ``chain_id`` without modifying ``parent``."""
    while (nxt := parent.get(chain_id)) is not None:
        chain_id = nxt
    return chain_id


def _sorted(times: list[int], ids: list[str]) -> bool:
    """Whether ``(times[j], ids[j])`` strictly increase."""
    for j in range(1, len(ids)):
        t = times[j]
        prev_t = times[j - 1]
        if t < prev_t or (t == prev_t and ids[j] <= ids[j - 1]):
            return False
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


def _times_bytes(deadline: int, times: list[int]) -> bytes:
    """``[deadline, t_1..t_n]`` as little-endian int64 (the wire format of version 1)."""
    arr = array("q", [deadline, *times])
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tobytes()


def encode_key(rec: KeyRecord, ttl: int | None) -> bytes:
    """One key's record, msgpack ``[chain_ref, times (LE int64 bytes), [ids]]`` (``times`` is
    ``[deadline_us, t_1..t_n]``); ``ttl``: of the key's type in the state's configuration."""
    deadline, chain, times, ids = unpack_key(rec, ttl)
    return _encoder.encode(_KeyRec(chain, _times_bytes(deadline, times), ids))


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
            state.put(k, _key_record(state, k, kr.chain, kr.times, kr.ids))
    except msgspec.DecodeError as exc:
        raise ValueError(f"corrupt correlation state record: {exc}") from None
    return state


def encode_state(state: State) -> bytes:
    """Serialise ``state`` (format in the module docstring). Does not modify ``state``."""
    keys = []
    ttl_of = state.config.ttl_of
    for key, rec in state.items():
        deadline, chain, times, ids = unpack_key(rec, ttl_of(key))
        keys.append(_KeyWire(key, chain, _times_bytes(deadline, times), ids))
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
    for k in wire.keys:
        if state.get(k.key) is not None:
            raise ValueError(f"corrupt correlation state: key {k.key!r} twice")
        state.put(k.key, _key_record(state, k.key, k.chain, k.times, k.ids))
    return state


def _key_record(state: State, key: str, chain: str, times_bytes: bytes, ids: list[str]) -> KeyRecord:
    """A key's in-memory record from its serialised fields; ``ValueError`` if they are inconsistent."""
    arr = array("q")
    if len(times_bytes) % 8:
        raise ValueError(f"corrupt correlation state: times of key {key!r}")
    arr.frombytes(times_bytes)
    if sys.byteorder != "little":
        arr.byteswap()
    times = arr.tolist()
    if not ids or len(times) != len(ids) + 1 or not _sorted(times[1:], ids):
        raise ValueError(f"corrupt correlation state: events of key {key!r}")
    if chain not in state.heads and chain not in state.parent:
        raise ValueError(f"corrupt correlation state: chain {chain!r} of key {key!r} is unknown")
    return pack_key(chain, times[0], times[1:], ids, state.config.ttl_of(key))
