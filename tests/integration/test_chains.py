"""Chains as the worker stores them, on the real broker and store: equal to the offline
components, and unchanged by a kill -9 or by sharing the work with a second worker."""

from __future__ import annotations

import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from factories import chain_workload
from kafka_stack import Stack, json_rows

from pipeline.correlate import components, key_edges, resolve
from pipeline.model import decode_dict

N = 12_000

Chains = tuple[dict[str, str], set[tuple[str, str, str]]]


@pytest.fixture(scope="module")
def workload() -> list[dict[str, Any]]:
    return chain_workload(N)


def expected(workload: list[dict[str, Any]]) -> Chains:
    """Offline reference per scope: {event id: chain id} and every (key, from, to) edge."""
    by_scope: dict[str, list[Any]] = defaultdict(list)
    for d in workload:
        by_scope[d["scope"]].append(decode_dict(d))
    members: dict[str, str] = {}
    edges: set[tuple[str, str, str]] = set()
    for events in by_scope.values():
        members.update(components(events))
        edges |= key_edges(events)
    return members, edges


def stored(*stacks: Stack) -> Chains:
    """Resolved chain of every stored event and the live edges, over the stores of ``stacks``."""
    chain_of: dict[str, str] = {}
    aliases: dict[str, str] = {}
    marks: dict[tuple[str, str, str], int] = {}
    for s in stacks:
        for eid, cid in s.sql("SELECT id, chain_id FROM DB.events"):
            assert eid not in chain_of, f"{eid} stored twice"
            chain_of[eid] = cid
        for old, new in s.sql("SELECT DISTINCT old_chain_id, new_chain_id FROM DB.chain_aliases"):
            assert aliases.setdefault(old, new) == new, f"chain {old} aliased to two chains"
        for key, src, dst, removed in s.sql(
            "SELECT key, from_event, to_event, max(removed) FROM DB.chain_edges GROUP BY key, from_event, to_event"
        ):
            marks[(key, src, dst)] = max(marks.get((key, src, dst), 0), int(removed))
    members = {eid: resolve(aliases, cid) for eid, cid in chain_of.items()}
    return members, {e for e, removed in marks.items() if not removed}


def produce_by_scope(stack: Stack, workload: list[dict[str, Any]]) -> None:
    for scope in sorted({d["scope"] for d in workload}):
        stack.produce([orjson.dumps(d) for d in workload if d["scope"] == scope], key=scope.encode())


def wait_committed(stack: Stack, timeout: float = 60) -> None:
    """Until the group has committed every offset (the last checkpoint landed)."""
    from pipeline.bus import consumer_lag

    deadline = time.monotonic() + timeout
    while True:
        lag = consumer_lag(stack.settings)
        if all(p["lag"] == 0 for p in lag.values()):
            return
        assert time.monotonic() < deadline, f"lag {lag}\n{stack.log_tail()}"
        time.sleep(0.3)


def wait_members(stack: Stack, n: int, timeout: float = 60) -> None:
    """Until the worker group has ``n`` members, each with partitions assigned."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": stack.settings.kafka_bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        desc = admin.describe_consumer_groups([stack.settings.group])[stack.settings.group].result()
        if len(desc.members) == n and all(m.assignment.topic_partitions for m in desc.members):
            return
        assert time.monotonic() < deadline, f"group has {len(desc.members)} members\n{stack.log_tail()}"
        time.sleep(0.3)


def test_stored_chains_equal_offline_components(stack: Stack, workload: list[dict[str, Any]]) -> None:
    produce_by_scope(stack, workload)
    stack.start_worker()
    stack.wait_rows(len(workload))
    wait_committed(stack)
    members, edges = stored(stack)
    want_members, want_edges = expected(workload)
    assert members == want_members
    assert edges == want_edges
    assert len(set(members.values())) < len(members) / 3  # real chains, not singletons
    assert stack.sql("SELECT count() FROM DB.chain_aliases")[0][0] > 0  # merges happened out of order
    # The SQL view resolves aliases the same way.
    assert dict(stack.sql("SELECT id, chain_id FROM DB.v_event_chains")) == want_members
    live = stack.sql("SELECT key, from_event, to_event FROM DB.v_chain_edges")
    assert {tuple(r) for r in live} == want_edges and len(live) == len(want_edges)

    # `causelog chain` reads the same stored chain: ids, order, edges.
    sizes: dict[str, int] = defaultdict(int)
    for c in want_members.values():
        sizes[c] += 1
    big = max(sizes, key=lambda c: (sizes[c], c))
    some_member = sorted(e for e, c in want_members.items() if c == big)[-1]
    out = json_rows(stack.cli("chain", some_member, "--json", check=True).stdout)
    assert out["chain_id"] == big
    assert sorted(e["id"] for e in out["events"]) == sorted(e for e, c in want_members.items() if c == big)
    assert [e["id"] for e in out["events"]][0] == big  # the chain id is its earliest event
    assert {(e["key"], e["from"], e["to"]) for e in out["edges"]} == {
        e for e in want_edges if want_members[e[1]] == big
    }


def test_kill_9_mid_stream_then_restart_gives_the_uninterrupted_chains(
    kafka_bootstrap: str, tmp_path: Path, workload: list[dict[str, Any]]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    small = {"CAUSELOG_TOPIC_PREFIX": prefix, "CAUSELOG_BATCH_SIZE": "150", "CAUSELOG_CHECKPOINT_SECONDS": "0.3"}
    steady = Stack(kafka_bootstrap, tmp_path / "steady", CAUSELOG_TOPIC_PREFIX=prefix)
    crashy = Stack(kafka_bootstrap, tmp_path / "crashy", **small)
    try:
        steady.ensure_topics()
        produce_by_scope(steady, workload)
        steady.start_worker()
        worker = crashy.start_worker()
        kills = 0
        for threshold in (N // 5, N // 2):  # two crashes, the second one from a restored state
            deadline = time.monotonic() + 120
            while crashy.sql("SELECT count() FROM DB.events")[0][0] < threshold:
                assert time.monotonic() < deadline, crashy.log_tail()
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            kills += 1
            crashy.workers = []
            worker = crashy.start_worker()
        for s in (steady, crashy):
            s.wait_rows(len(workload))
            wait_committed(s)
        # The restarted worker resumed from its changelog and stored only part of the stream itself.
        assert crashy.stats()["worker"]["stored"] < len(workload)
        assert any(p["restored_at"] for p in crashy.stats()["correlation"])
        assert kills == 2
        uninterrupted = stored(steady)
        assert stored(crashy) == uninterrupted
        assert uninterrupted == expected(workload)
    finally:
        steady.stop_workers(signal.SIGKILL)
        crashy.stop_workers(signal.SIGKILL)


def test_two_workers_in_one_group_give_the_chains_of_one(
    kafka_bootstrap: str, tmp_path: Path, workload: list[dict[str, Any]]
) -> None:
    tag = uuid.uuid4().hex[:10]
    shared = {"CAUSELOG_TOPIC_PREFIX": f"t{tag}", "CAUSELOG_GROUP": f"g{tag}", "CAUSELOG_BATCH_SIZE": "150",
              "CAUSELOG_CHECKPOINT_SECONDS": "0.3"}
    # Each worker owns its own embedded store; together they hold the stream.
    first = Stack(kafka_bootstrap, tmp_path / "w1", **shared)
    second = Stack(kafka_bootstrap, tmp_path / "w2", **shared)
    try:
        first.ensure_topics()
        # Each scope's stream in two halves: the first worker correlates the first half alone ...
        halves: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        for scope in sorted({d["scope"] for d in workload}):
            mine = [d for d in workload if d["scope"] == scope]
            halves[0].extend(mine[: len(mine) // 2])
            halves[1].extend(mine[len(mine) // 2 :])
        produce_by_scope(first, halves[0])
        first.start_worker()
        first.wait_rows(len(halves[0]))
        wait_committed(first)
        # ... then a second worker joins: partitions move to it with their correlation state,
        # and both correlate the second half.
        second.start_worker()
        wait_members(first, 2)
        produce_by_scope(first, halves[1])
        deadline = time.monotonic() + 180
        while sum(s.sql("SELECT count() FROM DB.events")[0][0] for s in (first, second)) < len(workload):
            assert time.monotonic() < deadline, first.log_tail() + second.log_tail()
            time.sleep(0.3)
        wait_committed(first)
        n1 = first.sql("SELECT count() FROM DB.events")[0][0]
        n2 = second.sql("SELECT count() FROM DB.events")[0][0]
        assert n1 > 0 and n2 > 0, (n1, n2)
        assert n1 + n2 == len(workload)  # nothing stored by both
        assert stored(first, second) == expected(workload)
        # Partitions the first worker had correlated moved to the second with their state.
        taken = second.stats()["correlation"]
        assert taken and all(p["restored_at"] and p["next_offset"] > p["restored_at"] for p in taken), taken
        kept = {p["partition"] for p in first.stats()["correlation"]}
        assert kept and not kept & {p["partition"] for p in taken}
    finally:
        first.stop_workers(signal.SIGKILL)
        second.stop_workers(signal.SIGKILL)


def test_changelog_commits_state_and_offsets_together_or_not_at_all(stack: Stack) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from pipeline.bus.checkpoint import Changelog

    log = Changelog(stack.settings)
    assert log.load(1) == []
    consumer = Consumer({"bootstrap.servers": stack.settings.kafka_bootstrap, "group.id": stack.settings.group,
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.subscribe([stack.settings.topic_changes])
    deadline = time.monotonic() + 30
    while not consumer.assignment():  # join the group: offsets are committed for its generation
        consumer.poll(0.2)
        assert time.monotonic() < deadline
    offsets = [TopicPartition(stack.settings.topic_changes, 1, 42)]
    n = log.commit({1: [(b"a", b"1"), (b"b", b"2"), (b"a", None)]}, offsets, consumer.consumer_group_metadata())
    assert n == 3
    assert log.load(1) == [(b"a", b"1"), (b"b", b"2"), (b"a", None)]
    assert log.load(0) == []
    committed = consumer.committed([TopicPartition(stack.settings.topic_changes, 1)], timeout=10)
    assert committed[0].offset == 42
    # A worker that dies inside a checkpoint transaction leaves nothing behind: its successor on
    # the same home (same transactional id) aborts it at start.
    dying = log._ready()
    dying.begin_transaction()
    dying.produce(log.topic, b"3", key=b"c", partition=1)
    dying.flush(10)
    fresh = Changelog(stack.settings)  # same transactional id: fences and aborts the failed one
    assert fresh.load(1) == [(b"a", b"1"), (b"b", b"2"), (b"a", None)]
    fresh.commit({1: [(b"d", b"4")]})
    assert fresh.load(1)[-1] == (b"d", b"4") and (b"c", b"3") not in fresh.load(1)
    consumer.close()
