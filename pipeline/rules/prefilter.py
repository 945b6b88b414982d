"""Pre-filter index: skip the rules an event cannot match without running their predicates (pure).

Most community rules AND-require an equality on a discriminating field (``eventName``,
``eventSource``, ``eventType``, ``action``, ``verb``, ``objectRef.resource`` ...). At load time
:func:`requirement` derives, from a rule's pySigma condition tree, a set of (field, case-folded
text) pairs of which at least one MUST hold for the rule to match: a scalar at ``field`` whose
text (:func:`~pipeline.rules.compile.as_text`) lower-cased equals the text. It derives one only
where that is provable from the matching semantics of :mod:`pipeline.rules.compile`:

- a plain string value (no wildcards, no placeholder) matches exactly the texts that lower-case
  to it; a ``cased`` one only texts equal to it, which lower-case to its lower-case form;
- a list of values (or an expansion) is an OR: every branch must be derivable, their pairs unite;
- an AND holds only when each branch does: every derivable branch is an alternative, and
  :class:`Index` picks one per rule (an OR inside takes each branch's smallest);
- ``not``, keywords, numbers (``5`` equals ``"5.0"``), booleans, wildcards, ``contains``/
  ``startswith``/``endswith``, ``re``, ``cidr``, comparisons, ``null``/``exists``, field references
  derive nothing, and neither does an OR with such a branch.

The requirement is necessary, not sufficient: :class:`Index` only narrows the candidates and
every candidate's predicate still decides. Rules without a requirement are always candidates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionOR,
)
from sigma.types import Placeholder, SigmaCasedString, SigmaExpansion, SigmaString, SpecialChars

from pipeline.rules.compile import lower_texts
from pipeline.rules.fields import Doc

Requirement = frozenset[tuple[str, str]]


def _value_texts(value: Any) -> set[str] | None:
    """The lower-cased texts one of which a scalar must equal (lower-cased) to match ``value``."""
    if isinstance(value, SigmaExpansion):
        out: set[str] = set()
        for v in value.values:
            got = _value_texts(v)
            if got is None:
                return None
            out |= got
        return out
    if not isinstance(value, SigmaString) or value.contains_special():
        return None
    if any(isinstance(p, Placeholder | SpecialChars) for p in value.s):
        return None
    parts = [p for p in value.s if isinstance(p, str)]
    if isinstance(value, SigmaCasedString):
        # compile.string_test(cased=True) compares t == "".join(parts); then t.lower() equals this.
        return {"".join(parts).lower()}
    if type(value) is not SigmaString:
        return None
    # compile.string_test lower-cases each part, then joins (a list of plain strings lower-cases
    # the joined text): t.lower() must equal exactly this; when the two could differ, no index.
    folded = "".join(p.lower() for p in parts)
    return {folded} if folded == "".join(parts).lower() else None


def _node(node: Any) -> list[Requirement]:
    """Alternatives, each of which alone every match satisfies (empty: nothing provable)."""
    if isinstance(node, ConditionFieldEqualsValueExpression):
        if not isinstance(node.field, str):
            return []
        texts = _value_texts(node.value)
        return [] if texts is None else [frozenset((node.field, t) for t in texts)]
    if isinstance(node, ConditionOR):
        return _any_of([_node(a) for a in node.args])
    if isinstance(node, ConditionAND):
        return [r for a in node.args for r in _node(a)]  # any one branch's requirement holds
    return []  # NOT, keywords, anything else: nothing provable


def _smallest(options: Sequence[Requirement]) -> Requirement:
    return min(options, key=lambda r: (len({f for f, _ in r}), len(r), sorted(r)))


def _any_of(branches: Sequence[list[Requirement]]) -> list[Requirement]:
    """An OR: every branch must have a requirement; the union of their smallest ones."""
    out: set[tuple[str, str]] = set()
    for options in branches:
        if not options:
            return []
        out |= _smallest(options)
    return [frozenset(out)] if out else []


def requirements(rule: Any) -> tuple[Requirement, ...]:
    """For a pySigma ``SigmaRule``: alternative requirements, each alone satisfied by every
    match (``()``: none provable, the rule is always a candidate)."""
    try:
        return tuple(_any_of([_node(c.parse()) for c in rule.detection.parsed_condition])
                     if len(rule.detection.parsed_condition) > 1
                     else _node(rule.detection.parsed_condition[0].parse()))
    except Exception:  # noqa: BLE001 - whatever pySigma raises here, compile_detection reports it
        return ()


def requirement(rule: Any) -> Requirement | None:
    """The smallest of :func:`requirements` (fewest fields, then fewest values), or ``None``."""
    options = requirements(rule)
    return _smallest(options) if options else None


#: fields that name what happened (most selective first); an alternative on one of them beats one
#: on a field with few values (``outcome``, ``actor.assurance``, ``userIdentity.type``)
PREFERRED = ("eventName", "eventType", "action", "type", "objectRef.resource", "verb", "eventSource")


def _preference(req: Requirement) -> int:
    return min((PREFERRED.index(f) if f in PREFERRED else len(PREFERRED)) for f, _ in req)


class Index:
    """Rules (in order) with their alternative requirements; :meth:`candidates` keeps that order.

    Each rule is indexed by one alternative: one on a :data:`PREFERRED` field first (``type`` or
    ``eventName`` rather than ``outcome: success``), then the one whose fields the most rules of
    the list can be indexed by (a field looked up once serves them all), then the smallest."""

    __slots__ = ("_items", "_always", "_by_field")

    def __init__(self, items: Sequence[Any], options: Sequence[Sequence[Requirement]]) -> None:
        self._items: list[Any] = list(items)
        self._always: list[int] = []
        self._by_field: dict[str, dict[str, list[int]]] = {}
        popular: Counter[str] = Counter()
        for alts in options:
            popular.update({f for r in alts for f, _ in r})
        for i, alts in enumerate(options):
            if not alts:
                self._always.append(i)
                continue
            best = min(alts, key=lambda r: (_preference(r), -min(popular[f] for f, _ in r),
                                            len({f for f, _ in r}), len(r), sorted(r)))
            for field, text in best:
                self._by_field.setdefault(field, {}).setdefault(text, []).append(i)

    def candidates(self, doc: Doc) -> list[Any]:
        """The rules ``doc`` may match: those without a requirement and those whose is met."""
        if not self._by_field:
            return self._items
        hits: set[int] | None = None
        for field, by_text in self._by_field.items():
            for t in lower_texts(doc, field):
                found = by_text.get(t)
                if found:
                    if hits is None:
                        hits = set(self._always)
                    hits.update(found)
        items = self._items
        if hits is None:
            return [items[i] for i in self._always]
        return [items[i] for i in sorted(hits)]
