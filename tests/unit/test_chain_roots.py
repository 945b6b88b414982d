"""The chain_roots table (009_chain_roots.sql, pipeline/store/chain_roots.py): every merged
chain's current root written with the merges, so readers resolve a chain in one lookup. It must
give the same answers as following chain_aliases to the end (v_chain_roots, v_event_chains)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from factories import BASE, chain_workload, event_dict

from pipeline.correlate.partition import AliasRow, PartitionCorrelator, correlate_batch
from pipeline.model import decode
from pipeline.store import EventWriter, Pending, Position, Store, queries
from pipeline.store import chain_roots as roots_table
from pipeline.store.migrations import discover

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def ev(i: int, ms: int, links: list[str]) -> dict[str, Any]:
    d = event_dict(i)
    d["time"] = (BASE + timedelta(milliseconds=ms)).isoformat()
    d["links"] = links
    return d


def write(store: Store, correlators: dict[int, PartitionCorrelator], envs: list[dict[str, Any]], offset: int) -> int:
    """Correlate and write ``envs`` as the worker does; returns the next offset."""
    batch = [Pending(decode(orjson.dumps(d)), orjson.dumps(d), Position("t", 0, offset + n)) for n, d in enumerate(envs)]
    out = correlate_batch(correlators, ((p.event, 0, p.position.offset) for p in batch))
    EventWriter(store).write(batch, now=NOW, chains=out.chains, heads=out.heads, edges=out.edges, aliases=out.aliases)
    return offset + len(batch)


def view_roots(store: Store) -> dict[str, str]:
    """Chain id -> root by following the aliases (the recursive view)."""
    return {str(c): str(r) for c, r in store.query(f"SELECT chain_id, root FROM {store.database}.v_chain_roots").rows}


def event_chains(store: Store) -> dict[str, str]:
    return {str(i): str(c) for i, c in store.query(f"SELECT id, chain_id FROM {store.database}.v_event_chains").rows}


def table_roots(store: Store) -> dict[str, str]:
    """Event id -> current chain id through chain_roots (one lookup)."""
    rows = store.query(f"SELECT id, chain_id, chain_time FROM {store.database}.events").rows
    found = roots_table.roots(store, {str(c): t for _, c, t in rows})  # naive, as ClickHouse returns it
    return {str(i): found[str(c)][0] for i, c, _ in rows}


def test_merged_several_times_then_late_merge(store: Store) -> None:
    ids = {i: event_dict(i)["id"] for i in (5, 10, 15, 20, 25, 30)}
    correlators: dict[int, PartitionCorrelator] = {}
    # Three chains, then c30 joins c20, then c20 (holding c30) joins c10, then a late event
    # earlier than every head takes them all: c10, c20 and c30 now belong to c05.
    off = write(store, correlators, [ev(10, 10, ["change:k1"]), ev(20, 20, ["change:k2"]), ev(30, 30, ["change:k3"])], 0)
    off = write(store, correlators, [ev(25, 25, ["change:k2", "change:k3"])], off)
    assert roots_table.current(store, [ids[30]]) == {ids[30]: (ids[20], roots_table._us(BASE) + 20_000)}
    off = write(store, correlators, [ev(15, 15, ["change:k1", "change:k2"])], off)
    assert {c: r for c, (r, _) in roots_table.current(store, [ids[20], ids[30]]).items()} == {
        ids[20]: ids[10], ids[30]: ids[10]}
    write(store, correlators, [ev(5, 5, ["change:k1"])], off)

    head = BASE + timedelta(milliseconds=5)
    assert roots_table.roots(store, {ids[i]: BASE for i in (10, 20, 30)}) == {
        ids[i]: (ids[5], head) for i in (10, 20, 30)}
    assert roots_table.roots(store, {ids[5]: head.replace(tzinfo=None)}) == {ids[5]: (ids[5], head)}  # itself
    assert roots_table.members_of(store, [ids[5]]) == {ids[i]: ids[5] for i in (5, 10, 20, 30)}
    assert table_roots(store) == event_chains(store) == {ids[i]: ids[5] for i in ids}
    chain = queries.chain(store, ids[30])
    assert chain["chain_id"] == ids[5]
    assert [e["id"] for e in chain["events"]] == [ids[i] for i in (5, 10, 15, 20, 25, 30)]


def test_same_answers_as_the_alias_walk_on_a_workload_merged_out_of_order(store: Store) -> None:
    envs = chain_workload(3000, seed=11)
    correlators: dict[int, PartitionCorrelator] = {}
    off = 0
    for lo in range(0, len(envs), 250):  # small batches: merges spread over many writes
        off = write(store, correlators, envs[lo : lo + 250], off)
    walked = view_roots(store)
    assert len(set(walked.values())) > 10 and len(walked) > 50
    db = store.database
    deeper = store.query(f"SELECT count() FROM {db}.chain_aliases WHERE new_chain_id IN "
                         f"(SELECT old_chain_id FROM {db}.chain_aliases)").rows[0][0]
    assert deeper > 0  # some chains were merged into a chain that was merged again later
    assert table_roots(store) == event_chains(store)
    by_table = roots_table.current(store, walked)
    assert {c: r for c, (r, _) in by_table.items()} == walked
    roots = set(walked.values())
    expected = {c: r for c, r in walked.items()} | {r: r for r in roots}
    assert roots_table.members_of(store, roots) == expected


def test_rewriting_a_batch_adds_no_answer_and_a_chain_root_is_stable(store: Store) -> None:
    a = [AliasRow("acme", "c3", "c2", 2, "e3", 3), AliasRow("acme", "c2", "c1", 1, "e2", 3)]
    assert roots_table.record(store, a, token="x") == 2
    assert roots_table.record(store, a, token="y") == 0  # already stored: nothing to add
    assert roots_table.record(store, [AliasRow("acme", "c4", "c3", 3, "e4", 4)]) == 1  # into a merged chain
    assert {c: r for c, (r, _) in roots_table.current(store, ["c2", "c3", "c4"]).items()} == {
        "c2": "c1", "c3": "c1", "c4": "c1"}


def test_the_migration_backfills_merges_stored_before_it(store: Store) -> None:
    db = store.database
    # Aliases as an older worker wrote them (no chain_roots rows): b -> a, c -> b, then a -> z (late).
    rows = [["acme", "b", "a", 2, "eb", 3], ["acme", "c", "b", 3, "ec", 4], ["acme", "a", "z", 1, "ea", 5]]
    store.insert("chain_aliases", rows, ("scope", "old_chain_id", "new_chain_id", "new_head_time", "event_id", "time"))
    backfill = [s for s in next(m for m in discover() if m.version == 9).statements(db) if s.startswith("INSERT")]
    assert len(backfill) == 1
    store.command(backfill[0])
    assert {c: r for c, (r, _) in roots_table.current(store, ["a", "b", "c", "z"]).items()} == view_roots(store) == {
        "a": "z", "b": "z", "c": "z"}
    assert roots_table.roots(store, {"c": BASE})["c"] == ("z", datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=1))
