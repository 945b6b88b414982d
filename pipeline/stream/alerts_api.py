"""``GET /v1/alerts``: the alerts of the rules engine, from the ``alerts`` table (migration 007).

``POST /v1/alerts`` (a JSON list of alerts) stores alerts; ``causelog rules run`` uses it when the
store is the worker's embedded chDB, which no other process may open. Storing is idempotent by id.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import faust
import msgspec
from faust.web import Request, Response, View

from pipeline.errors import CauselogError
from pipeline.rules.model import LEVELS, Alert
from pipeline.store.alerts import insert_alerts, insert_deliveries, list_alerts
from pipeline.stream.jsonio import answer


def alert_filters(query: Any) -> dict[str, Any]:
    """``since`` (RFC 3339), ``rule``, ``level`` (that level or above), ``limit`` of a request."""
    since = query.get("since")
    level = query.get("level") or None
    if level is not None and level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    limit = int(query.get("limit") or 100)
    if not 0 < limit <= 100_000:
        raise ValueError(f"limit {limit} must lie between 1 and 100000")
    return {
        "since": datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None,
        "rule": query.get("rule") or None,
        "level": level,
        "limit": limit,
    }


def register_alerts(app: faust.App, ctx: Any) -> None:
    """Add ``GET /v1/alerts`` to the worker's API."""
    store = ctx.store

    @app.page("/v1/alerts")
    class Alerts(View):
        async def get(self, request: Request) -> Response:
            try:
                filters = alert_filters(request.query)
            except ValueError as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                rows = await asyncio.get_running_loop().run_in_executor(
                    ctx.reads, lambda: list_alerts(store, **filters))
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, rows)

        async def post(self, request: Request) -> Response:
            try:
                alerts = msgspec.json.decode(await request.read(), type=list[Alert])
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                await asyncio.get_running_loop().run_in_executor(ctx.reads, lambda: insert_alerts(store, alerts))
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, {"stored": len(alerts)})

    @app.page("/v1/alerts/deliveries")
    class Deliveries(View):
        async def post(self, request: Request) -> Response:
            try:
                rows = msgspec.json.decode(await request.read(), type=list[dict[str, Any]])
                for r in rows:
                    missing = {"alert_id", "receiver", "status", "attempts", "time"} - set(r)
                    if missing:
                        raise ValueError(f"a delivery lacks {', '.join(sorted(missing))}")
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                await asyncio.get_running_loop().run_in_executor(ctx.reads, lambda: insert_deliveries(store, rows))
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, {"stored": len(rows)})
