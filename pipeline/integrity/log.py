"""The append-only log of one input partition: its frontier and the offset it has reached. Pure.

Every event the worker stores from partition ``p`` is appended, in offset order, as the next leaf
(``leaf_hash`` of the envelope bytes exactly as stored). The state is small (one hash per set bit
of the size) and travels in the correlation changelog, in the same Kafka transaction as the
offsets, under the record key :data:`CHANGELOG_KEY` (value: msgpack
``[version, size, next_offset, [hashes]]``). A worker restored from it continues the same log, so
a replay assigns the same indexes and reaches the same roots.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from pipeline.errors import IntegrityError
from pipeline.integrity.merkle import Frontier

LOG_VERSION = 1
CHANGELOG_KEY = msgspec.msgpack.encode(("i", "", ""))
"""Changelog record key of a partition's log (distinct from every correlation record key)."""


class _LogRec(msgspec.Struct, array_like=True):
    version: int
    size: int
    next_offset: int
    hashes: list[bytes]


_dec = msgspec.msgpack.Decoder(_LogRec)
_enc = msgspec.msgpack.Encoder()


class PartitionLog:
    """The log of one partition. ``next_offset``: the offset after the last record the log
    decided on (-1: none yet); records below it are already decided (appended or not)."""

    __slots__ = ("dirty", "frontier", "next_offset", "partition")

    def __init__(self, partition: int, frontier: Frontier | None = None, next_offset: int = -1) -> None:
        self.partition = partition
        self.frontier = frontier or Frontier()
        self.next_offset = next_offset
        self.dirty = False

    @property
    def size(self) -> int:
        """Number of leaves (the next index to assign)."""
        return self.frontier.size

    def root(self) -> bytes:
        """The current root hash."""
        return self.frontier.root()

    def copy(self) -> PartitionLog:
        """An independent copy (a write works on one and installs it once stored)."""
        c = PartitionLog(self.partition, self.frontier.copy(), self.next_offset)
        c.dirty = self.dirty
        return c

    def decided(self, offset: int) -> bool:
        """Whether the record at ``offset`` was already decided by this log."""
        return offset < self.next_offset

    def append(self, offset: int, leaf: bytes) -> int:
        """Append the leaf of the stored record at ``offset``; return its index."""
        index = self.frontier.size
        self.frontier.append(leaf)
        self.next_offset = offset + 1
        self.dirty = True
        return index

    def skip(self, offset: int) -> None:
        """Record that the record at ``offset`` gets no index (a duplicate that was dropped)."""
        if offset >= self.next_offset:
            self.next_offset = offset + 1
            self.dirty = True

    def record(self) -> bytes:
        """The changelog value of this state."""
        return _enc.encode(_LogRec(LOG_VERSION, self.frontier.size, self.next_offset, list(self.frontier.hashes)))

    def take_changes(self) -> list[tuple[bytes, bytes]]:
        """The changelog record of this log if it changed since the previous call."""
        if not self.dirty:
            return []
        self.dirty = False
        return [(CHANGELOG_KEY, self.record())]

    @classmethod
    def from_record(cls, partition: int, value: bytes) -> PartitionLog:
        """Rebuild from a changelog value; ``IntegrityError`` if it is corrupt."""
        try:
            rec = _dec.decode(value)
        except msgspec.DecodeError as exc:
            raise IntegrityError(f"integrity log record of partition {partition} is unreadable: {exc}") from None
        if rec.version != LOG_VERSION:
            raise IntegrityError(f"integrity log record of partition {partition} has version {rec.version}, "
                                 f"expected {LOG_VERSION}")
        return cls(partition, Frontier(rec.size, rec.hashes), rec.next_offset)


def split_changelog(
    partition: int, records: Iterable[tuple[bytes, bytes | None]]
) -> tuple[list[tuple[bytes, bytes | None]], PartitionLog]:
    """Separate a partition's changelog into the correlation records and its log (the latest
    log record wins; none: a new, empty log)."""
    rest: list[tuple[bytes, bytes | None]] = []
    latest: bytes | None = None
    for key, value in records:
        if key == CHANGELOG_KEY:
            latest = value
        else:
            rest.append((key, value))
    log = PartitionLog(partition) if latest is None else PartitionLog.from_record(partition, latest)
    return rest, log


NO_INDEX = -1
"""``log_index`` of a row that is in no log (stored before integrity began, or a replayed record
the log had already decided on)."""


def assign(
    logs: dict[int, PartitionLog], entries: Iterable[tuple[int, int, bytes | None]]
) -> tuple[list[int], dict[int, PartitionLog]]:
    """Decide the index of each ``(partition, offset, leaf hash or None)`` entry, in order:
    ``None`` marks a duplicate that is not stored (no index). Works on copies of ``logs``
    (missing partitions start empty) and returns the indexes and the new logs of the
    partitions touched; install them only once the rows are stored."""
    work: dict[int, PartitionLog] = {}
    out: list[int] = []
    for partition, offset, leaf in entries:
        log = work.get(partition)
        if log is None:
            base = logs.get(partition)
            log = work[partition] = base.copy() if base is not None else PartitionLog(partition)
        if log.decided(offset):
            out.append(NO_INDEX)
        elif leaf is None:
            log.skip(offset)
            out.append(NO_INDEX)
        else:
            out.append(log.append(offset, leaf))
    return out, work
