"""Compiled rules and alerts (pure values).

Rules are compiled once by :mod:`pipeline.rules.loader`; the engine only calls their predicates.
An :class:`Alert` is what every kind of rule produces; its id is deterministic (rule, group,
window start, first event), so a replay or a restart produces the same ids and readers collapse
duplicates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.rules.compile import Predicate

ASSURANCE_ORDER = ("none", "claimed", "authenticated", "mfa", "signed")
LEVELS = ("informational", "low", "medium", "high", "critical")

LogSourceKey = tuple[str | None, str | None, str | None]


@dataclass(frozen=True, eq=False)
class RuleMeta:
    """What every rule carries: its Sigma ``id`` (or name), title, level, tags and file."""

    id: str
    title: str
    level: str = "medium"
    tags: tuple[str, ...] = ()
    name: str | None = None
    file: str = ""
    description: str = ""


@dataclass(frozen=True, eq=False)
class ChainCheck:
    """``chain: {missing: [...], contains: [...]}``: event types (globs) in the event's chain."""

    missing: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Detection:
    """A Sigma detection rule compiled to a predicate over its logsource's document."""

    meta: RuleMeta
    logsource: LogSourceKey
    on_envelope: bool  # product: causelog
    predicate: Predicate
    chain: ChainCheck | None = None
    alerts: bool = True  # False when only a correlation uses it (Sigma ``generate: false``)
    # alternative sets of (field, lower-cased text) pairs; each set has a pair every match has
    # (see pipeline.rules.prefilter; empty: none provable)
    require: tuple[frozenset[tuple[str, str]], ...] = ()


@dataclass(frozen=True, eq=False)
class Selection:
    """One side of an absence rule: a logsource and a compiled predicate."""

    logsource: LogSourceKey
    on_envelope: bool
    predicate: Predicate


@dataclass(frozen=True, eq=False)
class Correlation:
    """A Sigma correlation rule (v2) with its references resolved to detection/correlation ids."""

    meta: RuleMeta
    type: str  # event_count, value_count, temporal, temporal_ordered, value_sum, value_avg
    rules: tuple[str, ...]
    group_by: tuple[str, ...]
    timespan_us: int
    conditions: tuple[tuple[str, float], ...]  # (op, threshold), AND-ed
    fields: tuple[str, ...] = ()
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # alias -> rule id -> field
    generate: bool = False
    expression: Any = None  # pySigma extended condition tree (temporal), or None

    @property
    def closing(self) -> bool:
        """Conditions that more events could break (lt/lte/eq/neq) are judged when the window closes."""
        return any(op in ("lt", "lte", "eq", "neq") for op, _ in self.conditions)


@dataclass(frozen=True, eq=False)
class Absence:
    """``after`` A, ``expect`` B (joined on fields or on the chain) ``within`` a timespan."""

    meta: RuleMeta
    after: Selection
    expect: Selection
    join: tuple[str, ...]  # field paths, or ("chain",)
    within_us: int


@dataclass(frozen=True, eq=False)
class Silence:
    """A source (glob on the envelope's ``source``) silent for ``for`` while it usually is not."""

    meta: RuleMeta
    source: str
    for_us: int
    min_events: int = 10
    baseline_us: int = 0  # the source must have been seen over at least this long


@dataclass(frozen=True)
class Problem:
    """A rule that could not be loaded: file, rule id (or title), the Sigma feature and why."""

    file: str
    rule: str
    feature: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.rule or '<no id>'}: {self.feature}: {self.message}"


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert. ``time`` is the event time of the event that completed it (RFC 3339, UTC)."""

    id: str
    rule_id: str
    title: str
    level: str
    kind: str  # detection, correlation, absence, silence
    time: str
    tags: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    chain_id: str | None = None
    person: str | None = None
    group: dict[str, Any] = {}
    window_start: str | None = None
    window_end: str | None = None
    summary: str = ""


def alert_id(rule_id: str, group: str, window_start_us: int, first_event: str) -> str:
    """Deterministic alert id: the same rule, group, window and first event give the same id."""
    h = hashlib.sha256()
    for part in (rule_id, group, str(window_start_us), first_event):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()[:32]
