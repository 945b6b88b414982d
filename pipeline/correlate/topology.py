"""Declared dependencies between things that change (``topology.yaml``), pure.

Format::

    depends_on:
      api: [orders-db, payments]        # service api uses the database orders-db
      orders-db-config: [orders-db]     # this configmap configures orders-db
      web: [api]

Names are what events carry as ``target.id``, ``target.name`` or ``target.service``, or the
short forms :mod:`pipeline.correlate.targets` accepts: the last segment of an ARN or of a
``kind/name`` id, and ``kind:name`` (``payments-db``, ``database/payments-db`` and
``database:payments-db`` all name the entry ``database/payments-db``; see :func:`names`). ``why X``
looks at X, what X depends on (transitively: a broken dependency breaks X) and what depends on X
directly (a new deploy of a client can overload X), which is :meth:`Topology.related`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.correlate.targets import last_segment
from pipeline.errors import ConfigError, yaml_problem


def names(typed: str, name: str) -> bool:
    """Whether ``typed`` names the topology entry ``name`` in a form :mod:`pipeline.correlate.targets`
    accepts: ``name`` itself, its last segment (``payments-db`` for ``database/payments-db`` or an
    ARN), or ``kind:name`` for a ``kind/name`` entry."""
    return typed in (name, last_segment(name)) or typed.replace(":", "/") == name


@dataclass(frozen=True)
class Topology:
    """Dependency edges ``a -> b`` meaning "a depends on b"."""

    depends_on: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_obj(cls, obj: Any, origin: str = "topology") -> Topology:
        """Validate a parsed ``topology.yaml``; raise ConfigError naming the bad entry."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict) or set(obj) - {"depends_on"}:
            raise ConfigError(f"{origin}: expected a mapping with the single key `depends_on`")
        deps = obj.get("depends_on") or {}
        if not isinstance(deps, dict):
            raise ConfigError(f"{origin}: `depends_on` must map names to lists of names")
        out: dict[str, frozenset[str]] = {}
        for name, targets in deps.items():
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(f"{origin}: `depends_on.{name}` must be a list of names, got {targets!r}")
            out[str(name)] = frozenset(targets)
        return cls(out)

    def aliases(self, name: str) -> set[str]:
        """``name`` and every entry of the file it names (:func:`names`)."""
        known = set(self.depends_on) | {d for deps in self.depends_on.values() for d in deps}
        return {name} | {k for k in known if names(name, k)}

    def dependencies(self, name: str) -> set[str]:
        """Everything ``name`` depends on, transitively."""
        own = self.aliases(name)
        seen: set[str] = set()
        todo = sorted(own)
        while todo:
            for dep in self.depends_on.get(todo.pop(), ()):
                if dep not in seen and dep not in own:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    def dependents(self, name: str) -> set[str]:
        """What depends on ``name`` directly."""
        own = self.aliases(name)
        return {a for a, deps in self.depends_on.items() if own & deps and a not in own}

    def related(self, name: str) -> set[str]:
        """``name`` (with its other forms in the file), its transitive dependencies and its
        direct dependents."""
        return self.aliases(name) | self.dependencies(name) | self.dependents(name)


def load_topology(path: Path) -> Topology:
    """Read ``topology.yaml``; a missing file is an empty topology (``why`` sees the target only)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Topology()
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    return Topology.from_obj(obj, str(path))
