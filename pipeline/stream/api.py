"""The worker's query API: HTTP routes on the Faust web server.

Each route parses its request, runs a named query (pipeline.store.queries) on the query thread
pool and answers JSON. Registered by :func:`register_routes`; the worker's wiring stays in
:mod:`pipeline.stream.app`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import faust
from faust.web import Request, Response, View

from pipeline.correlate.topology import load_topology
from pipeline.errors import CauselogError, ConfigError, QueryError
from pipeline.settings import Settings
from pipeline.store import Store, queries
from pipeline.store.identities import identity_map
from pipeline.stream.correlation import Correlation
from pipeline.stream.ingest import Counters
from pipeline.stream.jsonio import dumps


@dataclass(frozen=True)
class ApiContext:
    """What the routes need from the worker."""

    settings: Settings
    store: Store
    counters: Counters
    correlation: Correlation
    reads: ThreadPoolExecutor
    # Problems of the ingest loop and per-partition commit times (see pipeline.stream.app).
    ingest_health: Callable[[], dict[str, Any]] | None = None


def register_routes(app: faust.App, ctx: ApiContext) -> None:
    """Add the query API's routes to ``app``."""
    settings, store, counters, correlation = ctx.settings, ctx.store, ctx.counters, ctx.correlation

    async def run_query(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(ctx.reads, lambda: fn(*args, **kwargs))

    def answer(view: View, obj: Any, status: int = 200) -> Response:
        return view.bytes(dumps(obj), content_type="application/json", status=status)

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
                limit = int(body.get("limit") or 10000)
            except (ValueError, KeyError, TypeError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                result = await run_query(store.readonly, sql, params, limit=limit)
            except QueryError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, {"columns": result.columns, "rows": result.rows})

    def span(q: Any, default_limit: int = 1000) -> dict[str, Any]:
        """since/until/limit of a query string; ValueError when one is malformed."""
        return {
            "since": datetime.fromisoformat(q["since"]) if q.get("since") else None,
            "until": datetime.fromisoformat(q["until"]) if q.get("until") else None,
            "limit": int(q.get("limit") or default_limit),
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
                limit = int(request.query.get("limit") or 1000)
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
                limit = int(q.get("limit") or 20)
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

