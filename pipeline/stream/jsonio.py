"""JSON for API answers and CLI output (orjson; ClickHouse values made JSON-friendly)."""

from __future__ import annotations

import decimal
import uuid
from datetime import UTC, date, datetime
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def iso(value: datetime) -> str:
    """UTC RFC 3339 with microseconds; naive values from ClickHouse are UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(obj: Any) -> bytes:
    """orjson with causelog's conventions (UTC times, sets and decimals as JSON values)."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS)


def answer(view: Any, obj: Any, status: int = 200) -> Any:
    """A JSON answer of an API view (a ``faust.web.View``): ``obj`` through :func:`dumps`."""
    return view.bytes(dumps(obj), content_type="application/json", status=status)
