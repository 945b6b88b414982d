"""Query API route of ``causelog report`` (the accountability report), registered by
:func:`register_incident` from :func:`pipeline.stream.api.register_routes`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import faust
from faust.web import Request, Response, View

from pipeline.errors import CauselogError, ConfigError
from pipeline.store.identities import identity_map
from pipeline.store.reports import accountability
from pipeline.stream.jsonio import answer

if TYPE_CHECKING:
    from pipeline.stream.api import ApiContext


def register_incident(app: faust.App, ctx: ApiContext) -> None:
    """Add ``GET /v1/report?since=…&until=…[&format=html]``."""

    @app.page("/v1/report")
    class Report(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                since = datetime.fromisoformat(q["since"])
                until = datetime.fromisoformat(q["until"]) if q.get("until") else datetime.now(UTC)
            except (ValueError, KeyError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)

            def run() -> dict:
                return accountability(ctx.store, since=since, until=until,
                                      identities=identity_map(ctx.store, ctx.settings.identities_path))

            try:
                result = await asyncio.get_running_loop().run_in_executor(ctx.reads, run)
            except ConfigError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            if q.get("format") == "html":
                from pipeline.report import accountability_html

                return self.bytes(accountability_html(result).encode(), content_type="text/html")
            return answer(self, result)
