"""Field access into one event document (pure): dotted paths, nested objects, lists of objects.

Sigma field names are paths into the record as the source system wrote it (``userIdentity.arn``,
``objectRef.resource``, ``target.alternateId``). A path segment may itself contain dots when the
record has a flat dotted key (``{"userIdentity.arn": ...}``), so at each level the longest key
that matches wins, then shorter ones. A list on the way (``resources``, Okta's ``target``) means
any element; a list at the end means any of its items.
"""

from __future__ import annotations

from typing import Any

_MISSING: Any = object()


class Doc:
    """One event document with a per-event cache of resolved paths.

    ``values(path)`` lists the leaf objects found at ``path`` (lists are kept as they are, so a
    field that exists with ``[]`` is still present); ``scalars(path)`` flattens those lists.
    """

    __slots__ = ("root", "_cache", "_flat", "_strings", "context", "lowered")

    def __init__(self, root: Any, context: Any = None) -> None:
        self.root = root
        self.context = context
        self._cache: dict[str, list[Any]] = {}
        self._flat: dict[str, list[Any]] = {}
        self._strings: list[Any] | None = None
        # path -> its scalars' texts lower-cased (filled by pipeline.rules.compile.lower_texts)
        self.lowered: dict[str, list[str]] = {}

    def values(self, path: str) -> list[Any]:
        """The objects found at ``path`` (empty when the field is absent)."""
        found = self._cache.get(path)
        if found is None:
            found = []
            root = self.root
            if isinstance(root, dict) and path in root:
                # The common case: a top-level key, dotted or not.
                found.append(root[path])
            else:
                _collect(root, _plan(path), 0, found)
            self._cache[path] = found
        return found

    def scalars(self, path: str) -> list[Any]:
        """The scalar values at ``path``, lists flattened (objects kept as they are)."""
        flat = self._flat.get(path)
        if flat is None:
            flat = []
            for v in self.values(path):
                _flatten(v, flat)
            self._flat[path] = flat
        return flat

    def leaves(self) -> list[Any]:
        """Every scalar value anywhere in the document (for keyword searches)."""
        if self._strings is None:
            out: list[Any] = []
            _leaves(self.root, out)
            self._strings = out
        return self._strings


# path -> for each segment index i, the keys to try there, longest first: (end segment, key)
_PLANS: dict[str, tuple[tuple[tuple[int, str], ...], ...]] = {}


def _plan(path: str) -> tuple[tuple[tuple[int, str], ...], ...]:
    """The (end, key) candidates of every level of ``path``, joined once per path, not per event."""
    plan = _PLANS.get(path)
    if plan is None:
        parts = path.split(".")
        n = len(parts)
        plan = tuple(tuple((j, ".".join(parts[i:j])) for j in range(n, i, -1)) for i in range(n))
        if len(_PLANS) < 100_000:  # rule paths are few; bounded against unexpected callers
            _PLANS[path] = plan
    return plan


def _collect(obj: Any, plan: tuple[tuple[tuple[int, str], ...], ...], i: int, out: list[Any]) -> None:
    if isinstance(obj, list | tuple):
        for item in obj:
            _collect(item, plan, i, out)
        return
    n = len(plan)
    if i == n:
        out.append(obj)
        return
    if not isinstance(obj, dict):
        return
    for j, key in plan[i]:
        child = obj.get(key, _MISSING)
        if child is not _MISSING:
            if j == n:
                out.append(child)
            else:
                _collect(child, plan, j, out)


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list | tuple):
        for item in value:
            _flatten(item, out)
    else:
        out.append(value)


def _leaves(value: Any, out: list[Any]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            _leaves(v, out)
    elif value is not None:
        out.append(value)
