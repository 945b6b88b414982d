"""Retention without breaking proofs, pure: the policy file, which rows are due, and the signed
record of what was pruned.

``retention.yaml`` (``CAUSELOG_RETENTION``, default ``$CAUSELOG_HOME/retention.yaml``)::

    retention:
      db.query: 90d        # an event type
      "access.*": 400d     # a type prefix
      default: forever     # everything else (the default)

An event is due when it is older than its type's retention (longest matching rule) and no legal
hold names its target (``target.id`` or ``target.service``). Pruning removes the rows but keeps
their leaf hashes in a ``pruned`` record, one per contiguous run of indexes, signed like a
checkpoint (body below), so ``verify`` checks the remaining rows against the same checkpoints
and a forged record cannot pass a deletion off as retention::

    causelog pruned
    <topic>/<log>
    <first index> <last index> <count>
    <base64 SHA-256 of the leaf hashes, in index order>
    <reason>
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from pipeline.errors import ConfigError, IntegrityError, yaml_problem
from pipeline.integrity.note import Signer, Verifier, open_note, sign_note

_DURATION = re.compile(r"^(\d+)([dhw])$")


@dataclass(frozen=True)
class Policy:
    """Retention per event type (``None``: forever)."""

    rules: dict[str, timedelta | None]
    default: timedelta | None = None

    def retention(self, event_type: str) -> timedelta | None:
        """How long events of ``event_type`` are kept (longest matching rule; ``None``: forever)."""
        best: tuple[int, timedelta | None] | None = None
        for pattern, keep in self.rules.items():
            hit = event_type.startswith(pattern[:-1]) if pattern.endswith("*") else event_type == pattern
            if hit and (best is None or len(pattern) > best[0]):
                best = (len(pattern), keep)
        return self.default if best is None else best[1]


def _duration(where: str, value: object) -> timedelta | None:
    text = str(value).strip()
    if text == "forever":
        return None
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{where}: {text!r} must look like 90d, 12h, 4w or forever")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": timedelta(days=n), "h": timedelta(hours=n), "w": timedelta(weeks=n)}[unit]


def load_policy(path: Path) -> Policy:
    """Read ``retention.yaml``; a missing file keeps everything forever."""
    if not path.exists():
        return Policy({})
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    rules = data.get("retention") if isinstance(data, dict) else None
    if not isinstance(rules, dict):
        raise ConfigError(f"{path}: expected a mapping under 'retention'")
    parsed = {str(k): _duration(f"{path}: retention.{k}", v) for k, v in rules.items()}
    default = parsed.pop("default", None)
    return Policy(parsed, default)


def runs(indexes: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ``(first, last)`` runs of sorted, distinct ``indexes``."""
    out: list[tuple[int, int]] = []
    for i in indexes:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


@dataclass(frozen=True)
class PrunedRun:
    """One pruned run of a log, with the leaf hashes of its rows."""

    topic: str
    log: int
    first: int
    last: int
    leaves: tuple[bytes, ...]
    reason: str

    def body(self) -> str:
        """The signed text."""
        digest = base64.b64encode(hashlib.sha256(b"".join(self.leaves)).digest()).decode()
        reason = " ".join(self.reason.split()) or "retention"
        return (f"causelog pruned\n{self.topic}/{self.log}\n{self.first} {self.last} {len(self.leaves)}\n"
                f"{digest}\n{reason}\n")

    def sign(self, signer: Signer) -> str:
        """The signed note of this record."""
        if len(self.leaves) != self.last - self.first + 1:
            raise IntegrityError(f"pruned run {self.first}..{self.last} has {len(self.leaves)} leaves")
        return sign_note(self.body(), signer)

    def check(self, note: str, verifiers: list[Verifier]) -> None:
        """Raise ``IntegrityError`` unless ``note`` is a trusted signature of exactly this record."""
        if open_note(note, verifiers) != self.body():
            raise IntegrityError(f"pruned record {self.first}..{self.last} does not match its signed note")
