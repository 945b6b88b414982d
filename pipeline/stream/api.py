"""The worker's query API: HTTP routes on the Faust web server.

Each route parses its request, runs a named query (pipeline.store.queries) on the query thread
pool and answers JSON. Registered by :func:`register_routes`; the worker's wiring stays in
:mod:`pipeline.stream.app`. Every route is behind the bearer-token middleware
(:mod:`pipeline.stream.auth`), and every read of events is recorded (:mod:`pipeline.stream.audit`).
Queries run on the store's read handles (:meth:`Store.reader`, :meth:`Store.readonly`), never
under the lock the worker's writes take.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from aiohttp import web
from faust.web import Request, Response, View

from pipeline.bus import DeliveryTracker, make_producer
from pipeline.correlate.topology import load_topology
from pipeline.errors import CauselogError, ConfigError, QueryError
from pipeline.settings import Settings
from pipeline.store import Store, queries
from pipeline.store.identities import identity_map
from pipeline.stream import audit, auth
from pipeline.stream.alerts_api import register_alerts
from pipeline.stream.api_incident import register_incident
from pipeline.stream.api_tokens import register_tokens
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import Counters
from pipeline.stream.integrity_api import register_integrity
from pipeline.stream.jsonio import answer
from pipeline.stream.metrics import register_metrics
from pipeline.stream.signer import CheckpointSigner
from pipeline.tokens import TokenFile

log = logging.getLogger("causelog.api")


@dataclass(frozen=True)
class ApiContext:
    """What the routes need from the worker."""

    settings: Settings
    store: Store
    counters: Counters
    correlation: Correlation
    reads: ThreadPoolExecutor
    signer: CheckpointSigner | None = None  # for /metrics (signing age)
    # Problems of the ingest loop and per-partition commit times (see pipeline.stream.app).
    ingest_health: Callable[[], dict[str, Any]] | None = None


def register_routes(app: faust.App, ctx: ApiContext) -> None:
    """Add the query API's routes to ``app``, behind authentication and the query audit."""
    settings, writer, counters, correlation = ctx.settings, ctx.store, ctx.counters, ctx.correlation
    store = writer.reader()  # named queries: read handles, never the writer's lock
    protect(app, settings)

    async def run_query(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(ctx.reads, lambda: fn(*args, **kwargs))

    def limit_of(q: Any, default: int) -> int:
        """The ``limit`` a request asks for; ValueError beyond the server's cap."""
        asked = q.get("limit")  # 0 is a limit out of range, not "the default"
        limit = int(asked) if asked not in (None, "") else min(default, settings.query_max_rows)
        if not 1 <= limit <= settings.query_max_rows:
            raise ValueError(f"limit {limit} is outside 1..{settings.query_max_rows} (CAUSELOG_QUERY_MAX_ROWS)")
        return limit


    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            # 503 with the reasons whenever ingestion is not running or not progressing, so a
            # supervisor (and `causelog status`) never reads "up" from a worker that does nothing.
            ingest = ctx.ingest_health() if ctx.ingest_health is not None else {"problems": []}
            body = {"ok": not ingest["problems"], "pid": os.getpid(), "store": store.where,
                    "group": settings.group, **ingest}
            return answer(self, body, 200 if body["ok"] else 503)

    @app.page("/v1/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            # ?tables=0 answers from memory only: cheap enough to poll while ingesting.
            if request.query.get("tables") == "0":
                return answer(self, {"worker": counters.snapshot(), "store": store.where,
                                     "correlation": correlation.stats()})
            try:
                tables = await run_query(queries.stats, store)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, {"worker": counters.snapshot(), "tables": tables, "store": store.where,
                                 "correlation": correlation.stats()})

    @app.page("/v1/sql")
    class SQL(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await request.json()
                sql = body["sql"]
                if not isinstance(sql, str) or not sql.strip():
                    raise ValueError("'sql' must be a non-empty string")
                params = body.get("params") or {}
                if not isinstance(params, dict):
                    raise ValueError("'params' must be an object")
                limit = limit_of(body, 10000)
            except (ValueError, KeyError, TypeError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            tag = uuid.uuid4().hex
            try:
                result = await until_disconnect(request, tag, lambda: writer.readonly(sql, params, limit=limit, tag=tag))
            except QueryError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, {"columns": result.columns, "rows": result.rows, "truncated": result.truncated})

    async def until_disconnect(request: Request, tag: str, fn: Any) -> Any:
        """Run a user query on the read pool; cancel it in ClickHouse if its client goes away."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(ctx.reads, fn)
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.25)
            if done:
                return future.result()
            transport = cast(web.Request, request).transport  # the aiohttp driver's request
            if transport is None or transport.is_closing():
                try:
                    await loop.run_in_executor(None, writer.cancel, tag)
                except CauselogError as exc:  # the query still ends at its time limit
                    log.warning("could not cancel query %s after its client left: %s", tag, exc)
                return await future

    def span(q: Any, default_limit: int = 1000) -> dict[str, Any]:
        """since/until/limit of a query string; ValueError when one is malformed."""
        return {
            "since": datetime.fromisoformat(q["since"]) if q.get("since") else None,
            "until": datetime.fromisoformat(q["until"]) if q.get("until") else None,
            "limit": limit_of(q, default_limit),
        }

    async def events(view: View, fn: Any, *args: Any, **kwargs: Any) -> Response:
        """Answer a named events query as {columns, rows}; 503 when the store fails."""
        try:
            result = await run_query(fn, store, *args, **kwargs)
        except CauselogError as exc:
            return answer(view, {"error": str(exc)}, 503)
        return answer(view, {"columns": result.columns, "rows": result.rows})

    @app.page("/v1/timeline")
    class Timeline(View):
        async def get(self, request: Request) -> Response:
            try:
                window = span(request.query)
            except ValueError as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            return await events(self, queries.timeline, target=request.query.get("target") or None, **window)

    @app.page("/v1/linked/{key_type}/{ident}")
    class Linked(View):
        async def get(self, request: Request, key_type: str, ident: str) -> Response:
            if key_type not in ("session", "trace", "commit", "deploy", "change", "request"):
                return answer(self, {"error": f"unknown link type {key_type!r}"}, 400)
            try:
                limit = limit_of(request.query, 1000)
            except ValueError as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            return await events(self, queries.linked, key_type, ident, limit=limit)

    @app.page("/v1/chain/{event_id}")
    class Chain(View):
        async def get(self, request: Request, event_id: str) -> Response:
            try:
                result = await run_query(lambda: queries.chain(
                    store, event_id, identities=identity_map(store, settings.identities_path)))
            except ConfigError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, result, 200 if result["chain_id"] else 404)

    @app.page("/v1/why")
    class Why(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                target = q["target"]
                at = datetime.fromisoformat(q["at"])
                window = timedelta(seconds=float(q.get("window") or 6 * 3600))
                limit = limit_of(q, 20)
            except (ValueError, KeyError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                topology = load_topology(settings.topology_path)
                result = await run_query(lambda: queries.why(
                    store, target, at=at, window=window, topology=topology, limit=limit,
                    identities=identity_map(store, settings.identities_path)))
            except ConfigError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            if q.get("format") == "html":
                from pipeline.report import why_html

                return self.bytes(why_html(result, generated_at=datetime.now(UTC)).encode(),
                                  content_type="text/html")
            return answer(self, result)

    @app.page("/v1/who")
    class Who(View):
        async def get(self, request: Request) -> Response:
            try:
                window = span(request.query)
                actor = request.query["actor"]
            except (ValueError, KeyError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                identities = await run_query(identity_map, store, settings.identities_path)
            except ConfigError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return await events(self, queries.who, actor, identities=identities, **window)

    register_tokens(app, ctx)
    register_integrity(app, ctx)
    register_alerts(app, ctx)
    register_incident(app, ctx)
    register_metrics(app, ctx)


def protect(app: faust.App, settings: Settings) -> None:
    """Put every route of ``app`` behind the token check, then the query audit (in that order)."""
    from pipeline.hashkey import install

    install(settings)  # audit events carry the deployment's keyed hash of the SQL, never its text
    producer = make_producer(settings)

    def send(key: bytes, value: bytes) -> None:
        tracker = DeliveryTracker(producer)
        tracker.produce(settings.topic_changes, value, key=key)
        tracker.flush(timeout=10.0)

    middlewares = app.web.web_app.middlewares  # type: ignore[attr-defined]  # the aiohttp driver's Application
    middlewares.append(auth.middleware(TokenFile(settings.tokens_path)))
    middlewares.append(audit.middleware(settings, send))
