"""The correlation state's in-memory layout changed (packed ``bytes`` records, see
:mod:`pipeline.correlate.state`); its changelog did not. A worker restarting on a changelog
written by the previous version (lists and arrays in memory, commit 6f796fc) restores it and goes
on exactly as that version did.

``data/state_changelog_v1.json.gz`` was written by that version with
``data/make_state_changelog_v1.py``: 1,200 ``chain_workload`` events over two scopes (one with
32-hex-digit ids, packed in memory; one with other ids, kept in the general layout), 30 hours so
session keys expire, ``max_per_key=4`` so keys forget, the first half correlated in batches of
100 with the changelog taken after each. It holds that changelog, the second half, and what the
old version produced on the second half: the rows and the changelog records.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.correlate import CorrelationConfig, State, decode_state, encode_state, step, step_raw
from pipeline.correlate.partition import PartitionCorrelator, correlate_batch
from pipeline.correlate.state import PACKED, WIDE, hex16, state_from_records
from pipeline.model.event import from_micros

DATA = Path(__file__).resolve().parent / "data" / "state_changelog_v1.json.gz"


@dataclass(frozen=True)
class Ev:
    id: str
    time: datetime
    links: tuple[str, ...]
    scope: str


def _load() -> dict[str, Any]:
    with gzip.open(DATA, "rt") as f:
        return json.load(f)


def _ev(x: list[Any]) -> Ev:
    return Ev(x[0], from_micros(x[1]), tuple(x[3]), x[2])


def test_a_changelog_of_the_previous_version_restores_and_goes_on_as_it_did() -> None:
    doc = _load()
    config = CorrelationConfig(max_per_key=doc["max_per_key"])
    logs: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for p, k, v in doc["changelog"]:
        logs.setdefault(p, []).append((base64.b64decode(k), None if v is None else base64.b64decode(v)))
    pcs = {p: PartitionCorrelator.from_changelog(p, recs, config) for p, recs in logs.items()}
    live = {str(p): sum(len(s.keys) for s in pc.states.values()) for p, pc in pcs.items()}
    assert all(live.values())
    # Both layouts are in use: the 32-hex ids packed, the others general.
    layouts = {p: {rec[0] & PACKED for s in pc.states.values() for rec in s.keys.values()} for p, pc in pcs.items()}
    assert layouts == {0: {PACKED}, 1: {0}}
    # What the old version wrote for the restored state is what the new one writes back.
    for p, pc in pcs.items():
        for scope, st in pc.states.items():
            old = {}
            for k, v in logs[p]:
                old[k] = v
            keys, _ = st.take_changes()
            assert keys == {}  # restoring marks nothing dirty
            st.dirty_keys.update(st.keys)
            keys, _ = st.take_changes()
            for name, value in keys.items():
                assert old[msgpack_name("k", scope, name)] == value

    first = doc["first_offset_of_rest"]
    rest = doc["rest"]
    out = correlate_batch(pcs, ((_ev(x), 0 if x[2] == "acme" else 1, first + j) for j, x in enumerate(rest)), config)
    want = doc["expected"]
    assert out.chains == want["chains"]
    assert out.heads == want["heads"]
    assert [list(e) for e in out.edges] == want["edges"]
    assert [list(a) for a in out.aliases] == want["aliases"]
    assert out.expired == want["expired"]
    assert {str(p): sum(len(s.keys) for s in pc.states.values()) for p, pc in pcs.items()} == want["live_keys"]
    after = {f"{p}:{base64.b64encode(k).decode()}": None if v is None else base64.b64encode(v).decode()
             for p, pc in pcs.items() for k, v in pc.changelog()}
    assert after == doc["changelog_after"]


def msgpack_name(kind: str, scope: str, name: str) -> bytes:
    import msgspec

    return msgspec.msgpack.encode((kind, scope, name))


@pytest.mark.parametrize("max_per_key", [1, 3, 64])
def test_packed_and_general_layouts_behave_alike(max_per_key: int) -> None:
    """The same random workload with 32-hex ids (packed records) and with short ids (general
    records) emits the same things, id for id, including out of order, ties, replays, expiry,
    forgetting (small max_per_key), gaps over 2**32 µs and deadlines restored from another TTL."""
    rng = random.Random(5)
    names = [f"e{i}" for i in range(600)]
    # Ties in time are broken by id: the renaming keeps the ids' order.
    hexes = dict(zip(sorted(names), sorted(f"{rng.getrandbits(128):032x}" for _ in names), strict=True))
    keys = [f"{t}:{i}" for t in ("session", "trace", "commit", "deploy") for i in range(12)]
    base = from_micros(1_796_000_000_000_000)
    events = []
    t = 0.0
    for n in names:
        t += rng.choice([0, 1, 30, 600, 5000, 20000])
        at = t - (rng.random() * 3000 if rng.random() < 0.2 else 0)
        events.append((n, base + timedelta(seconds=round(at)), tuple(rng.sample(keys, rng.choice([0, 1, 1, 2, 3])))))
    events += [events[i] for i in rng.sample(range(len(events)), 40)]  # replays
    rng.shuffle(events[-80:])
    config = CorrelationConfig(max_per_key=max_per_key, ttls={"session": timedelta(hours=1), "trace": timedelta(hours=3)})

    def run(rename: dict[str, str]) -> tuple[list[Any], State]:
        back = {v: k for k, v in rename.items()}
        state = State(config)
        out: list[Any] = []
        wm = None
        for i, (n, when, links) in enumerate(events):
            wm = when if wm is None else max(wm, when)
            if i == len(events) // 2:  # restore with other TTLs, then with the right ones
                other = CorrelationConfig(max_per_key=max_per_key, ttls={"session": timedelta(hours=2)})
                state = decode_state(encode_state(decode_state(encode_state(state), other)), config)
            _, em = step(state, Ev(rename.get(n, n), when, links, "s"), wm)
            out.extend(_rename(e, back) for e in em)
        return out, state

    plain, s1 = run({})
    packed, s2 = run(hexes)
    assert plain == packed
    # A third of the ids not hex (same order: the suffix never decides a comparison): records
    # switch between the layouts as such ids come and go.
    mixed = {n: h + "x" if rng.random() < 0.3 else h for n, h in hexes.items()}
    assert run(mixed)[0] == plain
    kinds = {type(e).__name__ for e in plain}
    one = max_per_key == 1  # nothing remembered to land between
    assert kinds == {"Member", "Alias", "Edge", "Expired"} | (set() if one else {"EdgeRemoved"})
    assert one or any(rec[0] & WIDE for rec in s2.keys.values())  # gaps over 2**32 µs
    assert all(rec[0] & PACKED for rec in s2.keys.values()) and not any(rec[0] & PACKED for rec in s1.keys.values())
    assert hex16(hexes["e1"]) is not None and hex16(hexes["e1"].upper()) is None and hex16("e1") is None


def test_times_outside_the_packed_range_use_the_general_layout() -> None:
    """Times before 1970 (or past 2**56 µs) do not fit a packed record: same emissions."""
    ids = [f"{i:032x}" for i in range(1, 6)]
    steps = [(ids[0], 10), (ids[1], -5), (ids[2], 2**56 + 1), (ids[3], 20), (ids[4], -7)]
    outs = []
    for rename in ({}, {i: f"id{n}" for n, i in enumerate(ids)}):
        back = {v: k for k, v in rename.items()}
        state = State(CorrelationConfig(max_per_key=3, ttls={"commit": None}))
        out = []
        for eid, t in steps:
            out += [_rename(e, back) for e in step_raw(state, rename.get(eid, eid), t, ("commit:c",), 0)]
        outs.append(out)
        assert not state.keys["commit:c"][0] & PACKED
    assert outs[0] == outs[1]
    assert len(outs[0]) > len(steps)


def _rename(e: Any, back: dict[str, str]) -> Any:
    import msgspec

    fields = {f: back.get(v, v) if isinstance(v, str) else v for f, v in msgspec.structs.asdict(e).items()}
    return type(e)(**fields)


def test_state_from_records_keeps_the_deadline_of_another_ttl() -> None:
    config = CorrelationConfig(ttls={"session": timedelta(hours=1)})
    other = CorrelationConfig(ttls={"session": timedelta(hours=5)})
    eid = "0" * 31 + "1"
    state = State(other)
    step(state, Ev(eid, from_micros(10**15), ("session:a",), "s"), 10**15)
    keys, chains = state.take_changes()
    restored = state_from_records({k: v for k, v in keys.items() if v}, {c: v for c, v in chains.items() if v},
                                  0, 0, config)
    assert restored.snapshot() == state.snapshot()  # 5 h deadline kept though the config says 1 h
    assert restored.keys["session:a"][0] & 4  # stored, not derived
