"""Retention and legal holds on the store (``causelog prune``, ``causelog hold``); the policy and
the signed records are pure (:mod:`pipeline.integrity.retention`).

Order of a prune: the signed ``pruned`` records first, then the rows are deleted. A prune cut
short leaves records whose rows still exist, which ``verify`` accepts (the rows are checked as
rows); the other order could leave deleted rows without a record, reported as tampering.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.integrity.note import Signer
from pipeline.integrity.retention import Policy, PrunedRun, runs
from pipeline.store.client import Store

PRUNED_COLUMNS = ("topic", "partition", "first_index", "last_index", "count", "reason", "pruned_at", "leaves", "note")


def add_hold(store: Store, target: str, reason: str, now: datetime) -> str:
    """Record a legal hold on ``target`` (an event's ``target.id`` or ``target.service``); its id."""
    hold_id = uuid.uuid4().hex[:12]
    store.insert("holds", [[hold_id, target, reason, now, False]], ["id", "target", "reason", "created_at", "released"])
    return hold_id


def release_hold(store: Store, hold_id: str, now: datetime) -> bool:
    """Release a hold; False if there is no active hold with that id."""
    rows = store.query(f"SELECT target, reason FROM {store.database}.holds FINAL WHERE id = {{i:String}} "
                       "AND NOT released", {"i": hold_id}).rows
    if not rows:
        return False
    store.insert("holds", [[hold_id, rows[0][0], rows[0][1], now, True]],
                 ["id", "target", "reason", "created_at", "released"])
    return True


def holds(store: Store) -> list[dict[str, Any]]:
    """The active holds, oldest first."""
    rows = store.query(f"SELECT id, target, reason, created_at FROM {store.database}.holds FINAL "
                       "WHERE NOT released ORDER BY created_at").rows
    return [{"id": r[0], "target": r[1], "reason": r[2], "created_at": r[3]} for r in rows]


@dataclass
class PruneResult:
    """What a prune removed (or would remove, dry run)."""

    removed: int = 0
    unlogged: int = 0
    held: int = 0
    runs: list[tuple[int, int, int]] = field(default_factory=list)
    """``(log, first index, last index)`` of each recorded run."""


def prune(
    store: Store, topic: str, policy: Policy, signer: Signer, now: datetime, *, dry_run: bool = False
) -> PruneResult:
    """Remove the events past their retention (not under a hold), recording signed runs."""
    result = PruneResult()
    finite = [d for d in [*policy.rules.values(), policy.default] if d is not None]
    if not finite:
        return result
    db = store.database
    held = {h["target"] for h in holds(store)}
    cols = store.columns(
        f"SELECT id, kafka_partition, log_index, leaf_hash, type, target_id, target_service, time FROM {db}.events "
        "WHERE kafka_topic = {t:String} AND time < {cut:DateTime64(6, 'UTC')} ORDER BY kafka_partition, log_index",
        {"t": topic, "cut": now - min(finite)})
    due: dict[int, list[tuple[int, bytes]]] = {}
    ids: list[str] = []
    for eid, part, idx, leaf, etype, target, service, t in zip(*cols, strict=True):
        keep = policy.retention(etype)
        if keep is None or _utc(t) >= now - keep:
            continue
        if target in held or (service and service in held):
            result.held += 1
            continue
        ids.append(eid)
        if int(idx) < 0:
            result.unlogged += 1
        else:
            due.setdefault(int(part), []).append((int(idx), bytes(leaf)))
    result.removed = len(ids)
    records = []
    for part, rows in sorted(due.items()):
        leaf_of = dict(rows)
        for first, last in runs(sorted(leaf_of)):
            run = PrunedRun(topic, part, first, last, tuple(leaf_of[i] for i in range(first, last + 1)), "retention")
            records.append([topic, part, first, last, last - first + 1, run.reason, now, list(run.leaves),
                            run.sign(signer)])
            result.runs.append((part, first, last))
    if dry_run or not ids:
        return result
    if records:
        store.insert("pruned", records, PRUNED_COLUMNS)
    # On a cluster each ALTER ... ON CLUSTER (to the _local tables, see Store.ddl) is queued in
    # Keeper with its ids written out: smaller chunks keep an entry far below Keeper's 1 MB limit.
    step = 10_000 if store.cluster is None else 1_000
    for lo in range(0, len(ids), step):
        chunk = {"ids": ids[lo:lo + step]}
        store.ddl(f"ALTER TABLE {db}.events DELETE WHERE id IN {{ids:Array(String)}} SETTINGS mutations_sync = 2",
                  chunk)
        store.ddl(f"ALTER TABLE {db}.event_links DELETE WHERE event_id IN {{ids:Array(String)}} "
                  "SETTINGS mutations_sync = 2", chunk)
    return result


def read_pruned(store: Store, topic: str, log: int) -> list[tuple[PrunedRun, str]]:
    """The pruned records of a log with their signed notes."""
    rows = store.query(f"SELECT first_index, last_index, reason, leaves, note FROM {store.database}.pruned "
                       "WHERE topic = {t:String} AND partition = {p:UInt32} ORDER BY first_index",
                       {"t": topic, "p": log}).rows
    return [(PrunedRun(topic, log, int(a), int(b), tuple(_raw(h) for h in leaves), reason), note)
            for a, b, reason, leaves, note in rows]


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
