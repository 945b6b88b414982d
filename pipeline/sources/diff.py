"""Structured diffs of nested JSON-like values, secrets redacted (pure, deterministic).

``structured_diff(before, after)`` returns::

    {"changed": ["spec.replicas", "data.DB_MAX_CONNECTIONS", ...],   # sorted key paths
     "before":  {"spec.replicas": 2, "data.DB_MAX_CONNECTIONS": "50"}, # value per path, if present
     "after":   {"spec.replicas": 3, "data.DB_MAX_CONNECTIONS": "80"}}

Paths name leaves: object keys joined with ``.``, items of lists that hold objects or lists as
``[i]`` (``spec.template.spec.containers[0].image``); a list of plain values is one leaf
(``rules[0].verbs`` = ``["get", "list"]``). A key that is not a plain identifier is quoted,
``data["ui.properties"]``. The root itself is ``$``. A path missing from ``before`` was added, one
missing from ``after`` was removed. Empty objects and lists are leaves too, unless the other side
has paths beneath them. ``None`` on one side of two objects counts as an empty object, so a create
is ``structured_diff(None, obj)`` and a delete ``structured_diff(obj, None)``.

Both sides go through :func:`pipeline.sources.redact.redact` first, with their keys as context:
a secret never appears, and a changed secret still shows as a changed path because its marker
changes. Pass ``before_known=False`` when only the new state is known (a Kubernetes ``update`` or
``patch`` audit record carries no old object): every leaf of ``after`` is listed and the result
says ``"before_known": false``. Past ``max_paths`` changed paths the lists are cut and
``"truncated": true`` is set.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pipeline.sources.redact import redact

__all__ = ["format_path", "leaf_paths", "structured_diff"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

PathPart = str | int


def format_path(parts: tuple[PathPart, ...] | list[PathPart]) -> str:
    """``("spec", "containers", 0, "image")`` -> ``spec.containers[0].image``; ``()`` -> ``$``."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out) if out else "$"


def _flatten(value: Any, prefix: tuple[PathPart, ...], out: dict[tuple[PathPart, ...], Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, (*prefix, k if isinstance(k, str) else str(k)), out)
    elif isinstance(value, list | tuple) and any(isinstance(v, dict | list | tuple) for v in value):
        for i, v in enumerate(value):
            _flatten(v, (*prefix, i), out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def leaf_paths(value: Any) -> dict[str, Any]:
    """Every leaf of ``value`` by formatted path (empty containers are leaves)."""
    flat: dict[tuple[PathPart, ...], Any] = {}
    _flatten(value, (), flat)
    return {format_path(p): v for p, v in sorted(flat.items(), key=lambda kv: _sort_key(kv[0]))}


def _sort_key(path: tuple[PathPart, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in path)


def _is_empty_container(value: Any) -> bool:
    return isinstance(value, dict | list | tuple) and not value


def _same(a: Any, b: Any) -> bool:
    # 1 == 1.0 == True in Python; a diff must see a change of type as a change.
    return type(a) is type(b) and a == b


def structured_diff(
    before: Any,
    after: Any,
    *,
    before_known: bool = True,
    max_paths: int = 1000,
    redact_values: bool = True,
) -> dict[str, Any]:
    """The changed leaf paths between ``before`` and ``after`` with their (redacted) values."""
    if redact_values:
        before, after = redact(before), redact(after)
    if before is None and isinstance(after, dict):
        before = {}
    if after is None and isinstance(before, dict):
        after = {}
    flat_before: dict[tuple[PathPart, ...], Any] = {}
    flat_after: dict[tuple[PathPart, ...], Any] = {}
    if before_known:
        _flatten(before, (), flat_before)
    _flatten(after, (), flat_after)

    changed = [
        p
        for p in {**flat_before, **flat_after}
        if p not in flat_before or p not in flat_after or not _same(flat_before[p], flat_after[p])
    ]
    changed_set = set(changed)
    # An empty container on one side with leaves beneath it on the other is not a change of its own.
    changed = [
        p
        for p in changed
        if not (
            _is_empty_container(flat_before.get(p, flat_after.get(p)))
            and any(len(q) > len(p) and q[: len(p)] == p for q in changed_set)
        )
    ]
    changed.sort(key=_sort_key)
    result: dict[str, Any] = {}
    if len(changed) > max_paths:
        changed = changed[:max_paths]
        result["truncated"] = True
    result["changed"] = [format_path(p) for p in changed]
    result["before"] = {format_path(p): flat_before[p] for p in changed if p in flat_before}
    result["after"] = {format_path(p): flat_after[p] for p in changed if p in flat_after}
    if not before_known:
        result["before_known"] = False
    return result
