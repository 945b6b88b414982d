"""Reading the integrity logs back from the store: ``causelog verify`` and evidence packs.

The pure checks live in :mod:`pipeline.integrity`; this module only queries. A log is the rows of
one ``kafka_partition`` of ``<prefix>.changes`` with ``log_index >= 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.errors import IntegrityError
from pipeline.integrity.audit import LogReport, Row, StoredCheckpoint, audit_log
from pipeline.integrity.checkpoint import Checkpoint, open_checkpoint
from pipeline.integrity.merkle import Tree, leaf_hash
from pipeline.integrity.note import Verifier
from pipeline.integrity.pack import PackEvent, make_pack
from pipeline.store.client import Store
from pipeline.store.retention import read_pruned


def logs_of(store: Store, topic: str) -> list[int]:
    """The partitions that have a log (rows with an index, or checkpoints)."""
    db = store.database
    rows = store.query(
        f"SELECT DISTINCT kafka_partition FROM {db}.events WHERE kafka_topic = {{t:String}} AND log_index >= 0 "
        f"UNION DISTINCT SELECT DISTINCT partition FROM {db}.checkpoints WHERE topic = {{t:String}}", {"t": topic})
    return sorted(int(r[0]) for r in rows.rows)


CHUNK = 100_000
"""Rows read per query: the envelopes of a chunk are hashed and dropped before the next."""


def read_rows(store: Store, topic: str, log: int, since: datetime | None = None) -> tuple[list[Row], list[tuple[str, int]]]:
    """The rows of a log in index order (leaves recomputed from the envelopes; rows ingested
    before ``since`` keep their stored leaf), and ``(id, offset)`` of the partition's rows
    without an index."""
    db = store.database
    params: dict[str, Any] = {"t": topic, "p": log}
    recheck = "1"
    if since is not None:
        recheck = "ingested_at >= {since:DateTime64(6, 'UTC')}"
        params["since"] = since
    where = "kafka_topic = {t:String} AND kafka_partition = {p:UInt32}"
    top = int(store.query(f"SELECT max(log_index) FROM {db}.events WHERE {where} AND log_index >= 0", params).rows[0][0])
    rows: list[Row] = []
    for lo in range(0, top + 1, CHUNK):
        cols = store.columns(
            f"SELECT log_index, id, kafka_offset, leaf_hash, {recheck} AS recheck, if(recheck, envelope, '') AS envelope "
            f"FROM {db}.events WHERE {where} AND log_index >= {{lo:Int64}} AND log_index < {{hi:Int64}} "
            "ORDER BY log_index, kafka_offset", {**params, "lo": lo, "hi": lo + CHUNK}, formats={"envelope": "bytes"})
        if not cols or not cols[0]:
            continue  # no row in this chunk (a log pruned whole): chDB names no columns for an empty result
        idx, ids, offsets, stored, recheck_col, envelopes = cols
        rows.extend(Row(i, e, o, leaf_hash(env) if rc else s, s)
                    for i, e, o, s, rc, env in zip(idx, ids, offsets, stored, recheck_col, envelopes, strict=True))
    unlogged = store.query(f"SELECT id, kafka_offset FROM {db}.events WHERE {where} AND log_index < 0 "
                           "ORDER BY kafka_offset", params).rows
    return rows, [(r[0], int(r[1])) for r in unlogged]


def read_checkpoints(store: Store, topic: str, log: int) -> list[StoredCheckpoint]:
    """The stored checkpoints of a log, smallest first."""
    rows = store.query(
        f"SELECT origin, size, root, note, signed_at FROM {store.database}.checkpoints "
        "WHERE topic = {t:String} AND partition = {p:UInt32} ORDER BY size, signed_at", {"t": topic, "p": log}).rows
    return [StoredCheckpoint(r[0], int(r[1]), _raw(r[2]), r[3], r[4]) for r in rows]


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


@dataclass(frozen=True)
class Verification:
    """The result of ``causelog verify``: one report per log."""

    logs: list[LogReport]

    @property
    def ok(self) -> bool:
        """No finding in any log."""
        return not any(r.findings for r in self.logs)

    def summary(self) -> str:
        """One line: logs, events, latest verified checkpoint per log."""
        events = sum(r.events for r in self.logs)
        latest = ", ".join(f"{r.log}@{r.checkpoint if r.checkpoint is not None else '-'}" for r in self.logs)
        tail = sum(r.tail for r in self.logs)
        pruned = sum(b - a + 1 for r in self.logs for a, b in r.pruned)
        bad = sum(1 for r in self.logs if r.findings)
        head = "ok" if self.ok else f"TAMPERED: {bad} of {len(self.logs)} logs"
        return (f"{head}: {len(self.logs)} logs, {events:,} events; latest checkpoints (log@size): {latest or '-'}"
                + (f"; {pruned:,} pruned by retention" if pruned else "")
                + (f"; {tail:,} events not yet checkpointed" if tail else ""))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ok": self.ok, "summary": self.summary(), "logs": [{
            "log": r.log, "events": r.events, "checkpoint": r.checkpoint, "not_checkpointed": r.tail,
            "unlogged": r.unlogged, "pruned": [list(x) for x in r.pruned],
            "first_bad": None if r.first is None else vars(r.first),
            "findings": [vars(f) for f in r.findings],
        } for r in self.logs]}


def verify(
    store: Store, topic: str, verifiers: list[Verifier], *, log: int | None = None, since: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Verification:
    """Check every log (or ``log``) of ``topic`` against its stored checkpoints; ``progress`` is
    told ``(logs done, logs)`` after each log."""
    if not verifiers:
        raise IntegrityError("no verifier key: give the signing key or a verifier key")
    partitions = logs_of(store, topic)
    if log is not None:
        if log not in partitions:
            known = ", ".join(map(str, partitions)) or "none yet"
            raise IntegrityError(f"no log {log} in the store for {topic} (logs: {known})")
        partitions = [log]
    reports = []
    for p in partitions:
        rows, unlogged = read_rows(store, topic, p, since)
        reports.append(audit_log(p, rows, read_checkpoints(store, topic, p), verifiers, unlogged,
                                 read_pruned(store, topic, p)))
        if progress is not None:
            progress(len(reports), len(partitions))
    return Verification(reports)


def evidence(store: Store, topic: str, event_ids: Sequence[str], verifiers: list[Verifier], query: str) -> dict[str, bytes]:
    """The files of an evidence pack for ``event_ids`` (see :mod:`pipeline.integrity.pack`)."""
    if not event_ids:
        raise IntegrityError("no event ids given")
    db = store.database
    cols = store.columns(
        f"SELECT id, kafka_partition, log_index, envelope FROM {db}.events WHERE id IN {{ids:Array(String)}} "
        "AND kafka_topic = {t:String} ORDER BY kafka_partition, log_index",
        {"ids": list(dict.fromkeys(event_ids)), "t": topic}, formats={"envelope": "bytes"})
    found: dict[str, PackEvent] = {}
    for i, p, idx, env in zip(*cols, strict=True):
        found.setdefault(i, PackEvent(i, bytes(env), int(p), int(idx)))
    missing = [i for i in event_ids if i not in found]
    if missing:
        raise IntegrityError(f"no stored event with id {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unlogged = [e.event_id for e in found.values() if e.index < 0]
    if unlogged:
        raise IntegrityError(f"event {unlogged[0]!r} is in no log (stored before integrity began)")
    chosen = [found[i] for i in dict.fromkeys(event_ids)]
    logs: dict[int, tuple[Tree, Checkpoint, str]] = {}
    for p in sorted({e.log for e in chosen}):
        need = max(e.index for e in chosen if e.log == p) + 1
        cp, note = _covering(store, topic, p, need, verifiers)
        logs[p] = (Tree(_tree_leaves(store, topic, p, cp.size, verifiers)), cp, note)
    return make_pack(chosen, logs, verifiers[0].vkey, query)


def _tree_leaves(store: Store, topic: str, log: int, size: int, verifiers: list[Verifier]) -> list[bytes]:
    """The first ``size`` leaves of ``log``: the stored rows' leaf hashes, and for rows removed by
    retention the leaves their signed ``pruned`` record kept (a record whose signature does not
    verify stands in for nothing, so a forged one cannot fill a deletion)."""
    cols = store.columns(
        f"SELECT log_index, leaf_hash FROM {store.database}.events WHERE kafka_topic = {{t:String}} "
        "AND kafka_partition = {p:UInt32} AND log_index >= 0 AND log_index < {n:Int64} "
        "ORDER BY log_index LIMIT 1 BY log_index",
        {"t": topic, "p": log, "n": size})
    leaves: dict[int, bytes] = dict(zip((int(i) for i in cols[0]), (_raw(h) for h in cols[1]), strict=True)) if cols else {}
    for run, run_note in read_pruned(store, topic, log):
        try:
            run.check(run_note, verifiers)
        except IntegrityError:
            continue
        for k, h in enumerate(run.leaves):
            leaves.setdefault(run.first + k, h)
    missing = [i for i in range(size) if i not in leaves]
    if missing:
        raise IntegrityError(f"log {log}: {len(missing)} rows of the checkpointed tree are missing, the first at "
                             f"index {missing[0]} (run `causelog verify`)")
    return [leaves[i] for i in range(size)]


def _covering(store: Store, topic: str, log: int, need: int, verifiers: list[Verifier]) -> tuple[Checkpoint, str]:
    """The latest checkpoint of ``log`` with a good signature and at least ``need`` leaves."""
    for sc in reversed(read_checkpoints(store, topic, log)):
        try:
            cp = open_checkpoint(sc.note, verifiers)
        except IntegrityError:
            continue
        if cp.size >= need:
            return cp, sc.note
        break
    raise IntegrityError(f"log {log}: no signed checkpoint covers index {need - 1} yet "
                         "(checkpoints are signed every CAUSELOG_SIGN_SECONDS); retry shortly")
