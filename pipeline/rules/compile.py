"""Compile a Sigma detection (as parsed by pySigma) into one Python predicate over a :class:`Doc`.

pySigma parses the YAML, applies the value modifiers (``contains`` adds wildcards, ``base64``
encodes, ``windash`` expands, ``all`` switches the value linking to AND, ``neq`` negates ...) and
resolves the condition (``1 of selection_*``, ``all of them``, ``not``, parentheses) into a tree
of AND/OR/NOT over field/value leaves. This module turns that tree into closures once, at load
time; evaluating an event never looks at YAML or pySigma objects again.

Matching follows the Sigma specification (sigma-rules-specification, appendix modifiers):

- strings compare case-insensitively over the whole value; ``*`` and ``?`` are wildcards
  (escaped with ``\\``); ``cased`` makes the comparison case-sensitive;
- ``re`` searches (unanchored) case-sensitively unless ``i``; ``m`` and ``s`` set multi-line and
  dot-all;
- numbers equal numbers or strings that parse to the same number; ``gt/gte/lt/lte`` compare
  numerically (a numeric string counts, anything else never matches);
- ``null`` matches a missing field or a JSON null; ``exists`` checks presence only;
- ``fieldref`` compares with the values of another field of the same event (case-insensitive,
  ``startswith``/``endswith``/``contains`` apply);
- ``cidr`` matches IPv4/IPv6 addresses inside the network;
- a field holding a list (or a path through a list of objects) matches when any item matches;
  a field holding an object matches string values against its compact JSON text;
- keywords (values without a field) search every scalar value of the document, as substrings
  unless the keyword has wildcards of its own at its ends.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sigma import modifiers as _modifiers
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from pipeline.rules.fields import Doc

# The Sigma modifiers appendix names ``utf16le`` (``wide`` is its alias); pySigma knows only ``wide``.
_modifiers.modifier_mapping.setdefault("utf16le", _modifiers.SigmaWideModifier)

Predicate = Callable[[Doc], bool]
ScalarTest = Callable[[Any], bool]


class Unsupported(Exception):
    """A Sigma feature this evaluator cannot run; ``feature`` names it for ``rules validate``."""

    def __init__(self, feature: str, detail: str) -> None:
        super().__init__(f"{feature}: {detail}")
        self.feature = feature
        self.detail = detail


def as_text(value: Any) -> str | None:
    """The string a value compares as: booleans as ``true``/``false``, numbers in their decimal
    spelling, objects as their compact JSON (``requestParameters|contains: 'Suspended'`` on a
    CloudTrail record); ``None`` (JSON null) as nothing."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value).decode()
    return None


def as_number(value: Any) -> int | float | None:
    """A number or a string holding one; ``None`` otherwise (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                return None
            return f if f == f else None  # NaN equals nothing
    return None


# --------------------------------------------------------------------------------------------
# strings


def _plain_parts(s: SigmaString) -> list[str | SpecialChars]:
    parts: list[str | SpecialChars] = []
    for p in s.s:
        if isinstance(p, Placeholder):
            raise Unsupported("expand", f"placeholder %{p.name}% needs a processing pipeline")
        parts.append(p)
    return parts


def lower_texts(d: Doc, path: str) -> list[str]:
    """The texts (:func:`as_text`) of the scalars at ``path``, lower-cased; cached per event, so
    every rule comparing that field case-insensitively shares one conversion."""
    got = d.lowered.get(path)
    if got is None:
        got = []
        for v in d.scalars(path):
            t = as_text(v)
            if t is not None:
                got.append(t.lower())
        d.lowered[path] = got
    return got


def _folded_shape(s: SigmaString) -> tuple[str, str] | None:
    """(shape, lower-cased text) of a case-insensitive string that is an equality, a prefix, a
    suffix or a substring test (``eq``/``pre``/``suf``/``mid``); ``None`` for other patterns."""
    if type(s) is not SigmaString:
        return None
    parts = _plain_parts(s)
    texts = [p.lower() if isinstance(p, str) else p for p in parts]
    star = SpecialChars.WILDCARD_MULTI
    if not any(isinstance(p, SpecialChars) for p in texts):
        return "eq", "".join(t for t in texts if isinstance(t, str))
    if len(texts) == 2 and texts[1] is star and isinstance(texts[0], str):
        return "pre", texts[0]
    if len(texts) == 2 and texts[0] is star and isinstance(texts[1], str):
        return "suf", texts[1]
    if len(texts) == 3 and texts[0] is star and texts[2] is star and isinstance(texts[1], str):
        return "mid", texts[1]
    return None


def _folded_predicate(field: str, shape: str, want: str) -> Predicate:
    """``string_test`` (case-insensitive) over :func:`lower_texts`: the same result, shared work."""
    if shape == "eq":
        return lambda d: want in lower_texts(d, field)
    if shape == "pre":
        return lambda d: any(t.startswith(want) for t in lower_texts(d, field))
    if shape == "suf":
        return lambda d: any(t.endswith(want) for t in lower_texts(d, field))
    return lambda d: any(want in t for t in lower_texts(d, field))


def string_test(s: SigmaString, *, cased: bool = False, keyword: bool = False) -> Callable[[str], bool]:
    """A test on a text value for one Sigma string (wildcards, escapes, case rules)."""
    parts = _plain_parts(s)
    if keyword and parts:
        if parts[0] is not SpecialChars.WILDCARD_MULTI:
            parts.insert(0, SpecialChars.WILDCARD_MULTI)
        if parts[-1] is not SpecialChars.WILDCARD_MULTI:
            parts.append(SpecialChars.WILDCARD_MULTI)
    fold: Callable[[str], str] = (lambda t: t) if cased else str.lower
    texts = [fold(p) if isinstance(p, str) else p for p in parts]
    star = SpecialChars.WILDCARD_MULTI
    if not any(isinstance(p, SpecialChars) for p in texts):
        want = "".join(t for t in texts if isinstance(t, str))
        return (lambda t: t == want) if cased else (lambda t: t.lower() == want)
    if texts == [star]:
        return lambda t: True
    if len(texts) == 2 and texts[1] is star and isinstance(texts[0], str):
        pre = texts[0]
        return (lambda t: t.startswith(pre)) if cased else (lambda t: t.lower().startswith(pre))
    if len(texts) == 2 and texts[0] is star and isinstance(texts[1], str):
        suf = texts[1]
        return (lambda t: t.endswith(suf)) if cased else (lambda t: t.lower().endswith(suf))
    if len(texts) == 3 and texts[0] is star and texts[2] is star and isinstance(texts[1], str):
        mid = texts[1]
        return (lambda t: mid in t) if cased else (lambda t: mid in t.lower())
    pattern = "".join(re.escape(p) if isinstance(p, str) else ".*" if p is star else "." for p in parts)
    rx = re.compile(pattern, re.DOTALL | (0 if cased else re.IGNORECASE))
    return lambda t: rx.fullmatch(t) is not None


def _text_test(test: Callable[[str], bool]) -> ScalarTest:
    def run(v: Any) -> bool:
        t = as_text(v)
        return t is not None and test(t)

    return run


# --------------------------------------------------------------------------------------------
# other value types


def _number_test(n: int | float) -> ScalarTest:
    def run(v: Any) -> bool:
        x = as_number(v)
        return x is not None and x == n

    return run


def _bool_test(b: bool) -> ScalarTest:
    want = "true" if b else "false"

    def run(v: Any) -> bool:
        if isinstance(v, bool):
            return v is b
        return isinstance(v, str) and v.strip().lower() == want

    return run


_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}


def _regex_test(value: SigmaRegularExpression) -> ScalarTest:
    flags = 0
    for f in value.flags:
        flags |= _RE_FLAGS[f]
    try:
        rx = re.compile(str(value.regexp), flags)
    except re.error as exc:
        raise Unsupported("re", f"regular expression {str(value.regexp)!r} is invalid: {exc}") from None
    return _text_test(lambda t: rx.search(t) is not None)


def _cidr_test(value: SigmaCIDRExpression) -> ScalarTest:
    net = ipaddress.ip_network(value.cidr, strict=False)

    def run(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.ip_address(v.strip()) in net
        except ValueError:
            return False

    return run


_COMPARE: dict[CompareOperators, Callable[[Any, Any], bool]] = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}


def _compare_test(value: SigmaCompareExpression) -> ScalarTest:
    op, n = _COMPARE[value.op], value.number.number

    def run(v: Any) -> bool:
        x = as_number(v)
        return x is not None and op(x, n)

    return run


def _time_of(v: Any) -> datetime | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        seconds = v / 1000 if v > 1e11 else v  # epoch milliseconds (GitHub audit) or seconds
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


_PARTS: dict[TimestampPart, Callable[[datetime], int]] = {
    TimestampPart.MINUTE: lambda t: t.minute,
    TimestampPart.HOUR: lambda t: t.hour,
    TimestampPart.DAY: lambda t: t.day,
    TimestampPart.WEEK: lambda t: t.isocalendar()[1],
    TimestampPart.MONTH: lambda t: t.month,
    TimestampPart.YEAR: lambda t: t.year,
}


def _timestamp_test(value: SigmaTimestampPart) -> ScalarTest:
    part, n = _PARTS[value.timestamp_part], value.number

    def run(v: Any) -> bool:
        t = _time_of(v)
        return t is not None and part(t) == n

    return run


def scalar_test(value: Any, *, keyword: bool = False) -> ScalarTest:
    """A test on one scalar of the event for a Sigma value that needs no other field."""
    if isinstance(value, SigmaCasedString):
        return _text_test(string_test(value, cased=True, keyword=keyword))
    if isinstance(value, SigmaString):
        return _text_test(string_test(value, keyword=keyword))
    if isinstance(value, SigmaTimestampPart):
        return _timestamp_test(value)
    if isinstance(value, SigmaNumber):
        return _number_test(value.number)
    if isinstance(value, SigmaBool):
        return _bool_test(value.boolean)
    if isinstance(value, SigmaRegularExpression):
        return _regex_test(value)
    if isinstance(value, SigmaCIDRExpression):
        return _cidr_test(value)
    if isinstance(value, SigmaCompareExpression):
        return _compare_test(value)
    if isinstance(value, SigmaExpansion):
        tests = [scalar_test(v, keyword=keyword) for v in value.values]
        return lambda v: any(t(v) for t in tests)
    raise Unsupported(type(value).__name__, f"value {value!r} cannot be evaluated on an event")


# --------------------------------------------------------------------------------------------
# field leaves and the condition tree


def _fieldref(field: str, ref: SigmaFieldReference) -> Predicate:
    other = ref.field
    if ref.starts_with and ref.ends_with:
        def cmp(a: str, b: str) -> bool:
            return b in a
    elif ref.starts_with:
        def cmp(a: str, b: str) -> bool:
            return a.startswith(b)
    elif ref.ends_with:
        def cmp(a: str, b: str) -> bool:
            return a.endswith(b)
    else:
        def cmp(a: str, b: str) -> bool:
            return a == b

    def run(d: Doc) -> bool:
        refs = [t.lower() for t in map(as_text, d.scalars(other)) if t is not None]
        if not refs:
            return False
        for v in d.scalars(field):
            t = as_text(v)
            if t is not None:
                low = t.lower()
                if any(cmp(low, r) for r in refs):
                    return True
        return False

    return run


def field_predicate(field: str, value: Any) -> Predicate:
    """The predicate of one ``field: value`` leaf."""
    if isinstance(value, SigmaNull):
        return lambda d: (not (vals := d.scalars(field))) or any(v is None for v in vals)
    if isinstance(value, SigmaExists):
        want = bool(value.exists)
        return lambda d: bool(d.values(field)) is want
    if isinstance(value, SigmaFieldReference):
        return _fieldref(field, value)
    if isinstance(value, SigmaString):
        folded = _folded_shape(value)
        if folded is not None:
            return _folded_predicate(field, *folded)
    test = scalar_test(value)
    return lambda d: any(test(v) for v in d.scalars(field))


def keyword_predicate(value: Any) -> Predicate:
    """A keyword: any scalar anywhere in the document matches."""
    test = scalar_test(value, keyword=True)
    return lambda d: any(test(v) for v in d.leaves())


def _plain_lookup(args: list[Any]) -> Predicate | None:
    """``field: [a, b, c]`` of plain strings becomes one set lookup instead of N comparisons."""
    if len(args) < 3 or not all(isinstance(a, ConditionFieldEqualsValueExpression) for a in args):
        return None
    field = args[0].field
    wanted = set()
    for a in args:
        v = a.value
        if a.field != field or type(v) is not SigmaString or v.contains_special():
            return None
        wanted.add("".join(_plain_parts(v)).lower())  # type: ignore[arg-type]
    frozen = frozenset(wanted)
    return lambda d: not frozen.isdisjoint(lower_texts(d, field))


def compile_condition(node: Any) -> Predicate:
    """Closures for a pySigma condition tree (after ``SigmaCondition.parse()``)."""
    if isinstance(node, ConditionOR):
        fast = _plain_lookup(node.args)
        if fast is not None:
            return fast
        fs = [compile_condition(a) for a in node.args]
        if len(fs) == 2:
            a, b = fs
            return lambda d: a(d) or b(d)
        return lambda d: any(f(d) for f in fs)
    if isinstance(node, ConditionAND):
        fs = [compile_condition(a) for a in node.args]
        if len(fs) == 2:
            a, b = fs
            return lambda d: a(d) and b(d)
        return lambda d: all(f(d) for f in fs)
    if isinstance(node, ConditionNOT):
        f = compile_condition(node.args[0])
        return lambda d: not f(d)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return field_predicate(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        return keyword_predicate(node.value)
    if node is None:
        raise Unsupported("condition", "the condition resolves to nothing")
    raise Unsupported("condition", f"unknown condition node {type(node).__name__}")


def compile_detection(rule: Any) -> Predicate:
    """One predicate for a pySigma ``SigmaRule``: its conditions OR-ed (a list of conditions)."""
    fs = [compile_condition(c.parse()) for c in rule.detection.parsed_condition]
    if len(fs) == 1:
        return fs[0]
    return lambda d: any(f(d) for f in fs)
