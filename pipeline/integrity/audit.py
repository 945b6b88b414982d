"""``causelog verify``'s checks of one log, pure: from the stored rows (in index order) and the
stored checkpoints to findings, the first bad row first.

What each check catches:

- a row whose envelope does not hash to its ``leaf_hash``: **modified**;
- an index with no row: **deleted** (also when rows stop below a checkpoint's size);
- two rows with one index, or a row with no index stored after the log began: **inserted**;
- indexes out of Kafka offset order (they are assigned in offset order): **reordered**;
- a checkpoint whose root is not the root of the rows (envelope and hash both rewritten, rows
  swapped with their offsets...): **modified**, located between the last checkpoint that matches
  and the first that does not;
- a checkpoint that no trusted key signed: **bad_signature**; two checkpoints of one size with
  different roots, or a later one that does not extend an earlier one: **inconsistent**.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from pipeline.errors import IntegrityError
from pipeline.integrity.checkpoint import Checkpoint, open_checkpoint
from pipeline.integrity.merkle import Tree, verify_consistency
from pipeline.integrity.note import Verifier
from pipeline.integrity.retention import PrunedRun

KINDS = ("modified", "deleted", "inserted", "reordered", "bad_signature", "inconsistent")


class Row(NamedTuple):
    """One stored row of a log: its index, event id, Kafka offset, the leaf hash recomputed
    from its envelope and the leaf hash stored with it (a tuple: a log may hold millions)."""

    leaf_index: int
    event_id: str
    offset: int
    leaf: bytes
    stored_leaf: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    """A row of the ``checkpoints`` table."""

    origin: str
    size: int
    root: bytes
    note: str
    signed_at: datetime | None = None


@dataclass(frozen=True)
class Finding:
    """One problem: which log, what kind, where (index and event id when known), and why."""

    log: int
    kind: str
    index: int | None
    event_id: str | None
    detail: str

    def line(self) -> str:
        """One human line."""
        where = "" if self.index is None else f" at index {self.index}"
        who = "" if self.event_id is None else f" (event {self.event_id})"
        return f"log {self.log}: {self.kind}{where}{who}: {self.detail}"


@dataclass
class LogReport:
    """The result for one log."""

    log: int
    events: int = 0
    checkpoint: int | None = None
    """Size of the latest checkpoint whose signature and root verified."""
    unlogged: int = 0
    """Rows stored before the log began (no index, below its first offset)."""
    pruned: list[tuple[int, int]] = field(default_factory=list)
    """Index runs removed by retention (signed records), not counted in ``events``."""
    findings: list[Finding] = field(default_factory=list)

    @property
    def first(self) -> Finding | None:
        """The first bad row (lowest index; findings without an index come last)."""
        if not self.findings:
            return None
        return min(self.findings, key=lambda f: (f.index is None, f.index or 0))

    @property
    def tail(self) -> int:
        """Rows above the latest verified checkpoint (not yet covered by a signature)."""
        return self.events + sum(b - a + 1 for a, b in self.pruned) - (self.checkpoint or 0)


def audit_log(
    log: int,
    rows: Sequence[Row],
    checkpoints: Sequence[StoredCheckpoint],
    verifiers: list[Verifier],
    unlogged: Sequence[tuple[str, int]] = (),
    pruned: Sequence[tuple[PrunedRun, str]] = (),
) -> LogReport:
    """Check one log. ``rows``: sorted by ``(index, offset)``; ``unlogged``: ``(event id,
    offset)`` of its rows without an index; ``pruned``: the retention records and their notes
    (their leaves stand in for the removed rows)."""
    report = LogReport(log, events=len(rows))
    stand_ins: list[Row] = []
    for run, note in pruned:
        try:
            run.check(note, verifiers)
        except IntegrityError as exc:
            report.findings.append(Finding(log, "bad_signature", run.first, None, f"pruned record: {exc}"))
            continue
        report.pruned.append((run.first, run.last))
        stand_ins.extend(Row(run.first + k, "", -1, h, h) for k, h in enumerate(run.leaves))
    if stand_ins:
        # A record written just before its rows were deleted (a prune cut short): the rows
        # still there are checked as rows.
        present = {(r.leaf_index, r.stored_leaf) for r in rows}
        stand_ins = [r for r in stand_ins if (r.leaf_index, r.leaf) not in present]
        rows = sorted([*rows, *stand_ins], key=lambda r: (r.leaf_index, r.offset))
    leaves = _check_rows(report, rows)
    first_offset = min((r.offset for r in rows if r.offset >= 0), default=None)
    for event_id, offset in unlogged:
        if first_offset is not None and offset > first_offset:
            report.findings.append(Finding(log, "inserted", None, event_id,
                                           f"row at offset {offset} has no log index, yet the log began at "
                                           f"offset {first_offset}"))
        else:
            report.unlogged += 1
    _check_checkpoints(report, Tree(leaves), checkpoints, verifiers, max((r.leaf_index for r in rows), default=-1) + 1)
    return report


def _check_rows(report: LogReport, rows: Sequence[Row]) -> list[bytes]:
    """Index, offset and leaf checks; returns the leaves of the gap-free prefix of the log."""
    log = report.log
    leaves: list[bytes] = []
    contiguous = True
    expected = 0
    prev: Row | None = None  # the previous stored row (offset order is checked between those)
    before: Row | None = None
    last: Row | None = None  # the previous row of any kind
    for r in rows:
        if r.leaf_index < expected and last is not None:
            first = last.event_id or "a pruned row"
            report.findings.append(Finding(log, "inserted", r.leaf_index, r.event_id or None,
                                           f"two rows claim index {r.leaf_index}: {first} and {r.event_id or 'a pruned row'}"))
            continue
        last = r
        if r.leaf_index > expected:
            follows = f"next row present: index {r.leaf_index} (event {r.event_id})"
            missing = f"index {expected}" if r.leaf_index == expected + 1 else f"indexes {expected}..{r.leaf_index - 1}"
            report.findings.append(Finding(log, "deleted", expected, None, f"no row with {missing}; {follows}"))
            contiguous = False
        if r.offset < 0:  # removed by retention: its leaf stands in, nothing else to check
            if contiguous:
                leaves.append(r.leaf)
            expected = r.leaf_index + 1
            continue
        if r.leaf != r.stored_leaf:
            report.findings.append(Finding(log, "modified", r.leaf_index, r.event_id,
                                           "the envelope does not hash to the row's leaf_hash"))
        if prev is not None and r.offset <= prev.offset:
            # Either the previous row is too late or this one too early: the one out of line
            # with its other neighbour is the moved one.
            moved = prev if before is None or r.offset > before.offset else r
            report.findings.append(Finding(log, "reordered", moved.leaf_index, moved.event_id,
                                           f"index {prev.leaf_index} holds offset {prev.offset} but index {r.leaf_index} "
                                           f"offset {r.offset}: indexes follow offsets"))
        if contiguous:
            leaves.append(r.leaf)
        before, prev = prev, r
        expected = r.leaf_index + 1
    return leaves


def _check_checkpoints(
    report: LogReport, tree: Tree, stored: Sequence[StoredCheckpoint], verifiers: list[Verifier], rows_end: int
) -> None:
    log = report.log
    seen: set[str] = set()
    good: list[Checkpoint] = []
    for sc in sorted(stored, key=lambda c: (c.size, c.note)):
        if sc.note in seen:
            continue  # the same checkpoint stored twice (re-signed after a restart)
        seen.add(sc.note)
        try:
            cp = open_checkpoint(sc.note, verifiers)
        except IntegrityError as exc:
            report.findings.append(Finding(log, "bad_signature", None, None, f"checkpoint of size {sc.size}: {exc}"))
            continue
        if (cp.origin, cp.size, cp.root) != (sc.origin, sc.size, sc.root):
            report.findings.append(Finding(log, "bad_signature", None, None,
                                           f"checkpoint row of size {sc.size} does not match its signed note"))
            continue
        good.append(cp)
    last_ok = 0
    for cp in good:
        if cp.size > tree.size:
            if rows_end < cp.size and not any(f.kind == "deleted" for f in report.findings):
                report.findings.append(Finding(log, "deleted", rows_end, None,
                                               f"checkpoint of size {cp.size} covers indexes up to {cp.size - 1} "
                                               f"but the rows stop at {rows_end - 1}"))
            continue
        if tree.root(cp.size) != cp.root:
            explained = any(f.index is not None and f.index < cp.size for f in report.findings)
            if not explained:  # a row-level finding below already names the first bad row
                report.findings.append(Finding(log, "modified", last_ok, None,
                                               f"the rows with indexes {last_ok}..{cp.size - 1} do not hash to the "
                                               f"root signed in checkpoint {cp.size} (rows rewritten with their "
                                               "hashes, inserted or reordered)"))
            break
        last_ok = cp.size
        report.checkpoint = cp.size
    for a, b in zip(good, good[1:], strict=False):
        if a.size == b.size and a.root != b.root:
            report.findings.append(Finding(log, "inconsistent", None, None,
                                           f"two signed checkpoints of size {a.size} with different roots"))
        elif a.size < b.size <= tree.size and tree.root(a.size) == a.root and tree.root(b.size) == b.root:
            try:
                verify_consistency(a.size, b.size, a.root, b.root, tree.consistency_proof(a.size, b.size))
            except IntegrityError as exc:
                report.findings.append(Finding(log, "inconsistent", None, None, str(exc)))
