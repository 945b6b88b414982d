"""Small helpers shared by the pure normalizers: field access that fails with a DecodeError
naming the JSON path, timestamp parsing, and envelope assembly (pure; no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.model import Event, decode_dict
from pipeline.sources import keyed

_MISSING = object()


def fail(reason: str, detail: str, field: str, value: Any = None) -> DecodeError:
    return DecodeError(reason, detail, field=field, value=value)


def require_dict(obj: Any, field: str = "$", what: str = "an object") -> dict[str, Any]:
    """``obj`` if it is a dict, else a DecodeError at ``field``."""
    if not isinstance(obj, dict):
        raise fail("wrong_type", f"expected {what}, got {type(obj).__name__}", field, _short(obj))
    return obj


def dig(obj: Any, *path: str | int, default: Any = None) -> Any:
    """``obj[p0][p1]...`` or ``default`` when any step is missing or of the wrong type."""
    node = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                return default
            node = node[step]
        else:
            if not isinstance(node, dict) or step not in node:
                return default
            node = node[step]
    return default if node is None else node


def _field(path: tuple[str | int, ...]) -> str:
    out = "$"
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out


def need(obj: Any, *path: str | int, kind: type | tuple[type, ...] = str) -> Any:
    """Like :func:`dig` but the value must be present (not None) and of ``kind``."""
    node = obj
    for i, step in enumerate(path):
        here = _field(path[: i + 1])
        if isinstance(step, int):
            if not isinstance(node, list):
                raise fail("wrong_type", "expected an array", _field(path[:i]), _short(node))
            if not -len(node) <= step < len(node):
                raise fail("missing_field", f"required item {step} is missing", here)
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise fail("wrong_type", "expected an object", _field(path[:i]), _short(node))
            if node.get(step) is None:
                raise fail("missing_field", f"required field `{step}` is missing", here)
            node = node[step]
    if isinstance(kind, type) and kind is str and isinstance(node, str) and not node:
        raise fail("invalid_value", "must not be empty", _field(path), node)
    bad_bool = isinstance(node, bool) and not (kind is bool or (isinstance(kind, tuple) and bool in kind))
    if not isinstance(node, kind) or bad_bool:
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise fail(
            "wrong_type", f"expected {expected}, got {type(node).__name__}", _field(path), _short(node)
        )
    return node


def _short(value: Any) -> Any:
    if isinstance(value, dict | list):
        return f"<{type(value).__name__} of {len(value)}>"
    return value


# --------------------------------------------------------------------------------------------
# time

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an RFC 3339 string or epoch seconds/milliseconds; else None.

    Naive strings are taken as UTC (API servers and GitHub write UTC). Unparseable values give
    None so callers can fall back to the next candidate.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else None
    try:
        if isinstance(value, int | float):
            seconds = value / 1000 if abs(value) >= 100_000_000_000 else value
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str) and value.strip():
            text = value.strip()
            # Python < 3.12 accepts at most 6 fractional digits; K8s/Go write up to 9.
            text = _FRACTION.sub(lambda m: "." + m.group(1)[:6], text, count=1)
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def first_time(candidates: Iterable[tuple[str, Any]]) -> tuple[str, datetime] | None:
    """The first ``(field, value)`` whose value parses as a time in range, as ``(field, time)``."""
    for field, value in candidates:
        parsed = parse_time(value)
        if parsed is not None and 1970 <= parsed.year < 2200:
            return field, parsed
    return None


def as_utc(value: datetime, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise fail("wrong_type", "expected a datetime", field, _short(value))
    if value.tzinfo is None:
        raise fail("invalid_value", "must be timezone-aware", field, value.isoformat())
    return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# ids and envelopes


def canonical_digest(obj: Any) -> str:
    """Keyed hash (:meth:`pipeline.sources.keyed.Hasher.hex`, 32 hex) of the canonical JSON of ``obj``
    (sorted keys, compact): same content, same digest within a deployment.

    Keyed because these digests go into event ids and the record they digest is stored redacted:
    with a plain hash, a redacted value could be confirmed by hashing guesses into the id."""
    try:
        data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers beyond 64 bits
        data = msgspec.json.encode(obj, order="sorted")
    return keyed.current().hex(data)


def slug(text: Any, default: str = "unknown") -> str:
    """A lower-case type segment: ``[a-z0-9_-]+`` (other characters become ``_``)."""
    out = re.sub(r"[^a-z0-9_-]+", "_", str(text).strip().lower()).strip("_")
    return out[:60] or default


def unique(items: Iterable[str | None]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item and not any(c.isspace() for c in item) and len(item) <= 1024:
            seen.setdefault(item, None)
    return list(seen)


def build(fields: dict[str, Any]) -> Event:
    """Validate an envelope dict into an :class:`Event` (a DecodeError names the bad field)."""
    fields = {"specversion": "1.0", **fields}
    fields["links"] = unique(fields.get("links", ()))
    return decode_dict(fields)
