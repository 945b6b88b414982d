"""The worker's per-partition correlator: batching, snapshots and redelivery change nothing."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.correlate import CorrelationConfig, components, key_edges
from pipeline.correlate.partition import ChangelogRecord, PartitionCorrelator, correlate_batch
from pipeline.model import decode_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from factories import chain_workload  # noqa: E402

CONFIG = CorrelationConfig(ttls={"session": timedelta(minutes=20)})


def workload(n: int, seed: int) -> list[tuple[object, int, int]]:
    """(event, partition, offset) records: each scope on its own partition, offsets in order."""
    parts = {"acme": 0, "globex": 1, "initech": 2}
    offsets = dict.fromkeys(parts.values(), 0)
    out = []
    for d in chain_workload(n, seed=seed, jitter_s=1800):
        p = parts[d["scope"]]
        out.append((decode_dict(d), p, offsets[p]))
        offsets[p] += 1 + (offsets[p] % 7 == 3)  # gaps, like transaction markers leave
    return out


def per_record(pcs: dict[int, PartitionCorrelator], records: list[tuple[object, int, int]]) -> list[tuple]:
    """The rows each record produces, correlated one by one."""
    out = []
    for r in records:
        c = correlate_batch(pcs, [r], CONFIG)  # type: ignore[list-item]
        out.append((c.chains, c.edges, c.aliases))
    return out


def run(records: list[tuple[object, int, int]], cuts: list[int], checkpoints: set[int], restarts: set[int]) -> list[tuple]:
    """Correlate in batches cut at ``cuts``; after batch ``b`` in ``checkpoints`` each partition's
    changelog is appended to its log; after ``b`` in ``restarts`` the worker "dies": every
    correlator is rebuilt from its log alone and the records since the last checkpoint are
    correlated again (as the consumer re-reads from the committed offsets). Returns the rows of
    each record from the last time it was correlated."""
    logs: dict[int, list[ChangelogRecord]] = {}
    pcs: dict[int, PartitionCorrelator] = {}
    rows: list[tuple] = [()] * len(records)
    bounds = [0, *sorted(set(cuts)), len(records)]
    durable = 0
    for b, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        rows[lo:hi] = per_record(pcs, records[lo:hi])
        if b in checkpoints:
            for p, pc in pcs.items():
                logs.setdefault(p, []).extend(pc.changelog())
            durable = hi
        if b in restarts:
            pcs = {p: PartitionCorrelator.from_changelog(p, log, CONFIG) for p, log in logs.items()}
            rows[durable:hi] = per_record(pcs, records[durable:hi])
    return rows


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    cuts=st.lists(st.integers(0, 600), max_size=12),
    checkpoints=st.sets(st.integers(0, 12), max_size=8),
    restarts=st.sets(st.integers(0, 12), max_size=6),
    compact_often=st.booleans(),
)
def test_checkpoints_and_restarts_do_not_change_a_single_row(
    seed: int, cuts: list[int], checkpoints: set[int], restarts: set[int], compact_often: bool
) -> None:
    """``compact_often``: union-find compaction after every merge; it rewrites the chain refs of
    many keys at once, and the changelog must carry all of it."""
    from unittest import mock

    from pipeline.correlate import reducer

    with mock.patch.object(reducer, "_COMPACT_SLACK", 0 if compact_often else reducer._COMPACT_SLACK):
        records = workload(600, seed)
        reference = per_record({}, records)
        assert run(records, cuts, checkpoints, restarts) == reference


def test_redelivered_records_below_the_changelog_offset_are_not_correlated_again() -> None:
    records = workload(900, 3)
    pcs: dict[int, PartitionCorrelator] = {}
    first = correlate_batch(pcs, records[:500], CONFIG)  # type: ignore[arg-type]
    restored = {p: PartitionCorrelator.from_changelog(p, pc.changelog(), CONFIG) for p, pc in pcs.items()}
    # Agent mode: Faust committed offsets behind the changelog; the consumer re-delivers from 300.
    again = correlate_batch(restored, records[300:], CONFIG)  # type: ignore[arg-type]
    assert again.skipped == 200
    straight = correlate_batch({}, records, CONFIG)  # type: ignore[arg-type]
    assert {**first.chains, **again.chains} == straight.chains
    assert first.edges + again.edges == straight.edges


def test_a_checkpoint_writes_what_changed_not_the_whole_state() -> None:
    records = workload(2000, 5)
    pcs: dict[int, PartitionCorrelator] = {}
    correlate_batch(pcs, records[:1990], CONFIG)  # type: ignore[arg-type]
    full = sum(len(pc.changelog()) for pc in pcs.values())
    assert all(pc.changelog() == [] for pc in pcs.values())  # nothing changed since
    correlate_batch(pcs, records[1990:], CONFIG)  # type: ignore[arg-type]
    delta = sum(len(pc.changelog()) for pc in pcs.values())
    live = sum(len(s.keys) for pc in pcs.values() for s in pc.states.values())
    assert live > 200 and full > live
    assert 0 < delta < 10 * 4 + 3 * 2  # ~ the ten events' keys and chains, their scopes, the partitions


def test_chains_equal_offline_components_per_scope() -> None:
    records = workload(3000, 11)
    no_expiry = CorrelationConfig(ttls=dict.fromkeys(("session", "trace", "request", "deploy")), default_ttl=None)
    out = correlate_batch({}, records, no_expiry)  # type: ignore[arg-type]
    aliases = {a.old_chain_id: a.new_chain_id for a in out.aliases}

    def root(c: str) -> str:
        while c in aliases:
            c = aliases[c]
        return c

    by_scope: dict[str, list[object]] = {}
    for e, _, _ in records:
        by_scope.setdefault(e.scope, []).append(e)  # type: ignore[attr-defined]
    want: dict[str, str] = {}
    want_edges: set[tuple[str, str, str]] = set()
    for events in by_scope.values():
        want.update(components(events))  # type: ignore[arg-type]
        want_edges |= key_edges(events)  # type: ignore[arg-type]
    assert {e: root(c) for e, c in out.chains.items()} == want
    live: dict[tuple[str, str, str], bool] = {}
    for row in out.edges:
        live[(row.key, row.from_event, row.to_event)] = not row.removed
    assert {k for k, alive in live.items() if alive} == want_edges


def test_rejected_records_advance_the_offset_and_mark_the_state_dirty() -> None:
    pc = PartitionCorrelator(0)
    assert pc.next_offset == -1 and not pc.dirty
    correlate_batch({0: pc}, [(None, 0, 5)])
    assert pc.next_offset == 6 and pc.dirty and pc.seen(5) and not pc.seen(6)


def test_a_future_dated_event_does_not_expire_everything() -> None:
    """``observed_time`` caps the watermark: one bogus clock must not end live sessions."""
    base = {"specversion": "1.0", "source": "causelog://test", "type": "db.query", "scope": "acme",
            "actor": {"id": "alice", "kind": "human", "assurance": "claimed"}, "target": {"kind": "db", "id": "db"},
            "action": "select", "outcome": "success"}
    a = decode_dict({**base, "id": "a", "time": "2026-11-27T10:00:00Z", "links": ["session:pg:1"]})
    bogus = decode_dict({**base, "id": "b", "time": "2027-11-27T10:00:00Z",
                         "observed_time": "2026-11-27T10:00:05Z", "links": []})
    c = decode_dict({**base, "id": "c", "time": "2026-11-27T10:02:00Z", "links": ["session:pg:1"]})
    out = correlate_batch({}, [(a, 0, 0), (bogus, 0, 1), (c, 0, 2)], CONFIG)
    assert out.chains["c"] == "a" and out.expired == 0
    # Without observed_time, the bogus time is all the worker knows: it is believed.
    bogus_plain = decode_dict({**base, "id": "b", "time": "2027-11-27T10:00:00Z", "links": []})
    out = correlate_batch({}, [(a, 0, 0), (bogus_plain, 0, 1), (c, 0, 2)], CONFIG)
    assert out.chains["c"] == "c" and out.expired == 1


def test_changelog_rejects_garbage_with_a_reason() -> None:
    with pytest.raises(ValueError, match="not a correlation changelog record"):
        PartitionCorrelator.from_changelog(0, [(b"\x00garbage", b"x")])
    pc = PartitionCorrelator(2)
    correlate_batch({2: pc}, workload(50, 1)[:5], CONFIG)  # type: ignore[arg-type]
    log = pc.changelog()
    part_key = msgspec.msgpack.encode(("p", "", ""))
    with pytest.raises(ValueError, match="version 99"):
        PartitionCorrelator.from_changelog(2, [*log, (part_key, msgspec.msgpack.encode((99, 5)))])
    # A key whose chain record is missing is inconsistent, and named.
    broken = [(k, v) for k, v in log if msgspec.msgpack.decode(k)[0] != "c"]
    with pytest.raises(ValueError, match="chain .* of key .* is unknown"):
        PartitionCorrelator.from_changelog(2, broken)
    # Tombstones delete: the log folded with a later deletion of every key forgets them.
    keys_gone = [*log, *((k, None) for k, _ in log if msgspec.msgpack.decode(k)[0] == "k")]
    assert all(not s.keys for s in PartitionCorrelator.from_changelog(2, keys_gone).states.values())
