"""Client of the worker's query API (the only way to the embedded chDB store from outside)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from pipeline.errors import CauselogError, QueryError
from pipeline.settings import Settings
from pipeline.tokens import local_token


class WorkerUnavailable(CauselogError):
    """The worker's API did not answer."""


def call(settings: Settings, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
         timeout: float = 60.0) -> Any:
    """GET (or POST when ``body`` is given) ``path`` on the worker API and decode the JSON answer.

    Sends ``CAUSELOG_TOKEN``, or else the admin token ``causelog up`` left in ``$CAUSELOG_HOME``.
    """
    url = settings.api_url + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    data = orjson.dumps(body) if body is not None else None
    headers = {"Content-Type": "application/json"}
    token = local_token(settings.token, settings.admin_token_path)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read()).get("error", str(exc))
        except orjson.JSONDecodeError:
            message = str(exc)
        if exc.code == 400:
            raise QueryError(message) from None
        if exc.code in (401, 403):
            hint = "" if token else f"; no token: set CAUSELOG_TOKEN (there is no {settings.admin_token_path})"
            raise CauselogError(f"worker API {path} refused the request ({exc.code}): {message}{hint}") from None
        raise CauselogError(f"worker API {path} answered {exc.code}: {message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise WorkerUnavailable(
            f"the worker API at {settings.api_url} is not answering ({getattr(exc, 'reason', exc)}); "
            "start the stack with `causelog up` (or set CAUSELOG_API)"
        ) from None


def healthy(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The worker's /health answer, or None when it is not up."""
    try:
        return call(settings, "/health", timeout=timeout)
    except CauselogError:
        return None


def health(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The worker's /health answer whether healthy (200) or not (503, with ``problems``), or
    None when nothing answers."""
    req = urllib.request.Request(settings.api_url + "/health")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            body = orjson.loads(exc.read())
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        body.setdefault("ok", False)
        body.setdefault("problems", [f"/health answered {exc.code}"])
        return body
    except (urllib.error.URLError, ConnectionError, TimeoutError, orjson.JSONDecodeError):
        return None
