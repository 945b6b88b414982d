"""A raw HTTP client for the probes: no causelog code between the test and the worker's port."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any

import orjson


def request(port: int, method: str, path: str, *, token: str | None = None, body: Any = None,
            headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, Any]:
    """Send one request to 127.0.0.1:``port``; answer (status, decoded JSON or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = orjson.dumps(body)
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return resp.status, raw


def quote(text: str) -> str:
    """URL-quote a path segment."""
    return urllib.parse.quote(text, safe="")
