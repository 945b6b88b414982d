"""Readers are audited too: every API read of events becomes a ``causelog.query`` event.

The event goes to ``<prefix>.changes`` like any change, so "who looked at erin's sessions last
week" is a causelog query itself. It names the token (actor, assurance ``authenticated``), the
route (target), the outcome, the rows answered and, for SQL, the statement normalised (literals
replaced by ``?``) and hashed, never its literals. The answer is sent only once Kafka has the
event: a read that cannot be recorded is refused with 503 (fail closed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.errors import CauselogError
from pipeline.model import Actor, Event, Target, encode, event_id
from pipeline.settings import Settings
from pipeline.store.usersql import normalize, sql_hash
from pipeline.stream.auth import PRINCIPAL, Handler
from pipeline.stream.jsonio import dumps
from pipeline.tokens import Token

log = logging.getLogger("causelog.api.audit")

#: Route prefixes whose answers hold events: each call is recorded.
AUDITED = ("/v1/timeline", "/v1/why", "/v1/chain", "/v1/linked", "/v1/session", "/v1/trace", "/v1/who",
           "/v1/sql", "/v1/alerts", "/v1/integrity/evidence", "/v1/report")

#: Answer keys counted as the rows a read returned, in this order.
_ROW_KEYS = ("rows", "causes", "events", "alerts")


def audited(path: str) -> bool:
    """True when a request to ``path`` reads events and so is recorded."""
    return any(path == p or path.startswith(p + "/") for p in AUDITED)


@dataclass(frozen=True)
class QueryRecord:
    """What is known about one API read once it was answered."""

    token: Token
    method: str
    path: str
    route: str
    query: dict[str, str]
    status: int
    rows: int | None
    sql: str | None
    sql_params: tuple[str, ...] = ()
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_ms: float = 0.0


def query_event(rec: QueryRecord, *, source: str, scope: str, seq: str) -> Event:
    """The ``causelog.query`` envelope of one read (pure; the id is a function of its inputs)."""
    raw: dict[str, Any] = {
        "method": rec.method, "path": rec.path, "route": rec.route, "query": rec.query,
        "status": rec.status, "rows": rec.rows, "role": rec.token.role, "duration_ms": round(rec.duration_ms, 3),
    }
    if rec.sql is not None:
        raw["sql"] = {"normalized": normalize(rec.sql), "hash": sql_hash(rec.sql), "params": list(rec.sql_params)}
    return Event(
        specversion="1.0",
        id=event_id(source, seq, rec.token.name, rec.method, rec.path, rec.started.isoformat()),
        source=source,
        type="causelog.query",
        time=rec.started,
        observed_time=rec.started,
        scope=scope,
        actor=Actor(id=rec.token.name, kind="unknown", assurance="authenticated", verified=True,
                    principal=f"causelog-token:{rec.token.name}", display=f"{rec.token.name} ({rec.token.role})"),
        target=Target(kind="causelog.api", id=rec.path[:1024], name=rec.route, service="causelog"),
        action="query",
        outcome="success" if rec.status < 400 else "failure",
        raw=raw,
    )


def rows_in(body: bytes) -> int | None:
    """How many rows/causes/events a JSON answer holds (None when it is not such an answer)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        for key in _ROW_KEYS:
            if isinstance(obj.get(key), list):
                return len(obj[key])
    return None


async def _sql_of(request: web.Request) -> tuple[str | None, tuple[str, ...]]:
    if not request.path.startswith("/v1/sql"):
        return None, ()
    try:
        body = orjson.loads(await request.read())  # cached by aiohttp after the handler read it
    except (orjson.JSONDecodeError, ValueError):
        return None, ()
    if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
        return None, ()
    params = body.get("params")
    return body["sql"], tuple(sorted(map(str, params))) if isinstance(params, dict) else ()


def middleware(settings: Settings, send: Callable[[bytes, bytes], None]) -> Any:
    """aiohttp middleware recording audited reads with ``send(key, value)`` (blocking; run off-loop).

    Installed after :func:`pipeline.stream.auth.middleware`, so every request it sees has a token.
    """
    source = f"causelog://api/{settings.api_host}:{settings.api_port}"
    counter = itertools.count()
    run_id = f"{os.getpid()}.{time.time_ns()}"

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = request.get(PRINCIPAL)
        if not settings.audit_queries or token is None or not audited(request.path):
            return await handler(request)
        started, t0 = datetime.now(UTC), time.monotonic()
        try:
            response = await handler(request)
            status, body = response.status, getattr(response, "body", None)
        except web.HTTPException as exc:
            response, status, body = exc, exc.status, None
        sql, params = await _sql_of(request)
        info = request.match_info.route.resource
        rec = QueryRecord(
            token=token, method=request.method, path=request.path,
            route=info.canonical if info is not None else request.path,
            query=dict(request.query), status=status,
            rows=rows_in(body) if isinstance(body, bytes) and status < 400 else None,
            sql=sql, sql_params=params, started=started, duration_ms=(time.monotonic() - t0) * 1000,
        )
        event = query_event(rec, source=source, scope=settings.scope, seq=f"{run_id}.{next(counter)}")
        try:
            await asyncio.get_running_loop().run_in_executor(None, send, settings.scope.encode(), encode(event))
        except CauselogError as exc:
            log.error("could not record query %s by %s: %s", event.id, token.name, exc)
            return web.Response(body=dumps({"error": f"the answer was withheld: the query could not be recorded "
                                                     f"in the audit trail ({exc})"}),
                                status=503, content_type="application/json")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return record
