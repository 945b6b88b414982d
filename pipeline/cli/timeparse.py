"""Parsing the times users type: RFC 3339, ``2026-11-27 02:14``, ``02:14`` (today, UTC), ``6h`` (ago)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pipeline.errors import ConfigError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)(?:\s+ago)?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``2d``, ``1w`` as a timedelta."""
    m = _RELATIVE.match(text.strip().lower())
    if not m:
        raise ConfigError(f"{text!r} is not a duration (use e.g. 30m, 6h, 2d)")
    try:
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    except OverflowError:
        raise ConfigError(f"{text!r} is too long a duration") from None


def parse_time(text: str, now: datetime) -> datetime:
    """An aware UTC datetime from what a user typed; naive input is taken as UTC."""
    raw = text.strip()
    if _RELATIVE.match(raw.lower()):
        try:
            return (now - parse_duration(raw)).astimezone(UTC)
        except OverflowError:
            raise ConfigError(f"{text!r} reaches before year 1") from None
    if m := _CLOCK.match(raw):
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ConfigError(f"{text!r} is not a time of day")
        return now.astimezone(UTC).replace(hour=hour, minute=minute, second=second, microsecond=0)
    try:
        # RFC 3339 allows lower-case 't' and 'z'; fromisoformat does not.
        iso = raw.upper()
        value = datetime.fromisoformat(iso.replace(" ", "T", 1) if " " in iso else iso)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time (use RFC 3339 like 2026-11-27T02:14:00Z, '2026-11-27 02:14', 02:14 or 6h)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
