"""Encoding and decoding of envelopes.

``decode`` validates and raises :class:`~pipeline.errors.DecodeError` naming the field and the
offending value. ``encode`` is canonical: sorted keys, UTC times with six fractional digits,
optional fields left out when empty, no whitespace. The same event always encodes to the same
bytes, which the integrity hash chain relies on.

Nesting is bounded explicitly, before any parser runs: a record nested deeper than
:data:`MAX_DEPTH` levels (the envelope object is level 1, so ``raw`` and ``diff`` may nest
``MAX_DEPTH - 1`` = 64 levels) is rejected as ``too_deep``. Without the bound, a 10,000-deep
record reached Python's recursion limit inside the JSON parsers and killed the caller.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from pipeline.errors import DecodeError
from pipeline.model.event import Event, check_ranges, format_time

_decoder = msgspec.json.Decoder(Event)

# The worker's view of an envelope: every field validated like Event, but ``raw`` and ``diff``
# kept as unparsed (yet syntax-checked) JSON, since it stores the record's bytes as they came and
# building Python objects for a large ``raw`` is most of the cost of decoding.
WireEvent = msgspec.defstruct(
    "WireEvent",
    [
        (f.name, msgspec.Raw, msgspec.Raw(b"null")) if f.name in ("raw", "diff")
        else (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(Event)
    ],
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    namespace={"__post_init__": check_ranges},
)
_wire_decoder = msgspec.json.Decoder(WireEvent)
_builtins_decoder = msgspec.json.Decoder()

#: Deepest nesting of ``{``/``[`` a record may have (the envelope object counts as 1).
MAX_DEPTH = 65

# Numbers msgspec rejects when it builds Python objects (more digits than Python converts,
# exponents past a double) but accepts inside a Raw; a hit sends the record through ``decode``.
# One translate (digits -> "0", e/E -> "e", signs kept, the rest blanked) and a few substring
# searches keep this under a microsecond or two a record.
_NUMBERISH = bytes(
    ord("0") if chr(b).isdigit() and b < 128 else ord("e") if b in b"eE" else b if b in b"+-" else ord(" ")
    for b in range(256)
)
_LONG_DIGITS = b"0" * 1000
_EXPONENT = re.compile(rb"0e[+-]?000")
_DIGIT, _DOT, _MINUS = ord("0"), ord("."), ord("-")
_VALUE_BEFORE = frozenset(b" \t\r\n:,[")
# What the depth scan keeps of a record: brackets and the quotes that delimit strings.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_OPEN_CLOSE = bytes.maketrans(b"{}", b"[]")

_AT = re.compile(r" - at `(?P<path>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`")
_WRONG_TYPE = re.compile(r"^Expected `[^`]+`, got `[^`]+`")
_POST_INIT = re.compile(r"^`(?P<name>[a-z_]+)` must ")


def check_depth(data: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Raise ``DecodeError("too_deep")`` if ``data`` nests ``{``/``[`` deeper than ``limit``.

    Runs in C-speed passes (translate, split, replace) and never recurses. Brackets inside
    strings are ignored; an unbalanced (truncated) document is measured generously, so it
    fails here only if it could be deeper than ``limit``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.count(b"[") + data.count(b"{") <= limit:  # the common case: cannot be deeper
        return
    if b"\\" in data:  # escaped backslashes and quotes never delimit a string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Brackets outside strings only, all of one kind (depth is what counts, not pairing kinds).
    # Split on quotes, the even pieces lie outside strings (cheaper than a regex substitution).
    brackets = b"".join(data.translate(None, _NOT_STRUCTURE).split(b'"')[::2]).translate(_OPEN_CLOSE)
    # Each pass removes every innermost pair, so a balanced document empties after exactly
    # its depth in passes.
    depth = 0
    while brackets and depth <= limit:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
        depth += 1
    # What is left cannot pair up (a truncated record): count its openers as further levels.
    depth += brackets.count(b"[")
    if depth > limit:
        raise DecodeError("too_deep", f"record nests more than {limit} levels of objects/arrays "
                          f"(raw and diff may nest {limit - 1})")


def decode(data: bytes | str, *, max_bytes: int | None = None) -> Event:
    """Parse and validate one envelope; raise ``DecodeError`` with field, value and reason."""
    if max_bytes is not None:
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise DecodeError("oversized", f"record is {size} bytes, the limit is {max_bytes}")
    check_depth(data)
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses, so a truncated record can fail on a type first;
        # a record that is not JSON at all is reported as such.
        try:
            _builtins_decoder.decode(data)
        except msgspec.DecodeError as bad:
            raise DecodeError("bad_json", f"not a JSON document: {bad}") from None
        raise _validation_error(str(exc), data) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("bad_json", f"not a JSON document: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DecodeError("bad_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from None


def decode_wire(data: bytes, *, max_bytes: int | None = None) -> Any:
    """Validate like :func:`decode`, without materialising ``raw`` and ``diff``.

    Accepts and rejects exactly what ``decode`` does (a rejected record goes through ``decode``
    to get the same error), and returns a struct with the same attribute names as ``Event``.
    """
    if max_bytes is not None and len(data) > max_bytes:
        decode(data, max_bytes=max_bytes)
    check_depth(data)
    try:
        wire = _wire_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        decode(data, max_bytes=max_bytes)
        raise AssertionError("decode accepted what decode_wire rejected") from None
    diff = bytes(wire.diff).lstrip()  # type: ignore[attr-defined]
    if not (diff.startswith(b"{") or diff == b"null") or _odd_numbers(data) or not _utf8(data):
        decode(data, max_bytes=max_bytes)
    return wire


def _utf8(data: bytes) -> bool:
    """Whether ``data`` is UTF-8 (msgspec does not check the bytes of a Raw value it skips)."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _odd_numbers(data: bytes) -> bool:
    """Whether ``data`` may hold a number that only a full decode can judge (a three-digit
    exponent, a run of 1,000 digits); false positives just cost that decode."""
    shape = data.translate(_NUMBERISH)
    # A JSON exponent follows a digit: one regex search (a literal-prefix scan) finds candidates;
    # three substring searches for "e000"/"e+000"/"e-000" cost four times as much on a 1 KB
    # record. Hex ids ("...ab5e123...") match too: a candidate counts only if its number starts
    # where a JSON value can (which sent a quarter of 1 KB test records to a full decode).
    for m in _EXPONENT.finditer(shape):
        if _starts_value(data, shape, m.start()):
            return True
    # Counting is cheap, searching for a 1,000-byte needle is not, and a run of 1,000 digits
    # needs at least 1,000 digits.
    return len(data) >= 1000 and shape.count(b"0") >= 1000 and _LONG_DIGITS in shape


def _starts_value(data: bytes, shape: bytes, end: int) -> bool:
    """Whether the number whose last mantissa digit is at ``end`` may be a JSON value: its
    ``-?digits(.digits)?`` is preceded by the start, whitespace, ``:``, ``,`` or ``[``."""
    i = end
    while i > 0 and shape[i - 1] == _DIGIT:
        i -= 1
    if i > 0 and data[i - 1] == _DOT:
        i -= 1
        while i > 0 and shape[i - 1] == _DIGIT:
            i -= 1
    if i > 0 and data[i - 1] == _MINUS:
        i -= 1
    return i == 0 or data[i - 1] in _VALUE_BEFORE


def decode_json(data: bytes | msgspec.Raw) -> Any:
    """Plain JSON to Python objects (dicts, lists...), without the envelope's validation: for
    parts of an envelope :func:`decode_wire` already checked (its ``raw``)."""
    return _builtins_decoder.decode(data)


def decode_dict(obj: dict[str, Any]) -> Event:
    """Validate an already-parsed envelope (sources build dicts, then check them here)."""
    if not isinstance(obj, dict):
        raise DecodeError("wrong_type", f"Expected `object`, got `{type(obj).__name__}`", field="$")
    try:
        return msgspec.convert(obj, Event, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation_error(str(exc), obj) from None


def to_dict(event: Event) -> dict[str, Any]:
    """The canonical JSON-ready dict of an event (optional fields omitted when unset)."""
    out: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": format_time(event.time),
        "scope": event.scope,
        "actor": msgspec.to_builtins(event.actor),
        "target": msgspec.to_builtins(event.target),
        "action": event.action,
        "outcome": event.outcome,
        "links": list(event.links),
    }
    if event.subject is not None:
        out["subject"] = event.subject
    if event.observed_time is not None:
        out["observed_time"] = format_time(event.observed_time)
    if event.diff is not None:
        out["diff"] = event.diff
    if event.raw is not None:
        out["raw"] = event.raw
    if event.source_seq is not None:
        out["source_seq"] = event.source_seq
    if event.signature is not None:
        out["signature"] = event.signature
    return out


def encode(event: Event) -> bytes:
    """Canonical bytes of an event: stable across runs and machines."""
    obj = to_dict(event)
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # orjson stops at 64-bit integers; a raw payload may hold larger ones. msgspec writes the
        # same compact sorted JSON for them, and which encoder runs depends only on the content,
        # so the bytes stay stable.
        return msgspec.json.encode(obj, order="sorted")


def with_observed_time(event: Event, now: datetime) -> Event:
    """The event stamped with ``observed_time`` unless it already has one."""
    if event.observed_time is not None:
        return event
    if now.tzinfo is None:  # a naive clock is UTC here, never the machine's local zone
        now = now.replace(tzinfo=UTC)
    return msgspec.structs.replace(event, observed_time=now.astimezone(UTC))


def _validation_error(message: str, data: bytes | str | dict[str, Any]) -> DecodeError:
    at = _AT.search(message)
    path = at.group("path") if at else "$"
    text = message[: at.start()] if at else message
    if m := _MISSING.match(text):
        field = f"{path}.{m.group('name')}"
        return DecodeError("missing_field", f"required field `{m.group('name')}` is missing", field=field)
    if m := _UNKNOWN.match(text):
        field = f"{path}.{m.group('name')}"
        return DecodeError("unknown_field", f"field `{m.group('name')}` is not part of the envelope", field=field)
    if (m := _POST_INIT.match(text)) and path == "$":
        path = f"$.{m.group('name')}"
    reason = "wrong_type" if _WRONG_TYPE.match(text) else "invalid_value"
    return DecodeError(reason, text, field=path, value=_lookup(data, path))


_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _lookup(data: bytes | str | dict[str, Any], path: str) -> Any:
    """The value at a msgspec error path (``$.actor.kind``, ``$.links[2]``), or None."""
    try:
        node: Any = data if isinstance(data, dict) else _builtins_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    for key, index in _STEP.findall(path[1:]):
        try:
            node = node[key] if key else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    if node is data:
        return None
    return node
