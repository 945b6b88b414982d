"""``/v1/tokens``: the API's own tokens, managed over HTTP (admin only, see pipeline.stream.auth).

``GET /v1/tokens`` lists names, roles and creation times; ``POST /v1/tokens {"name", "role"}``
creates one and answers it once; ``DELETE /v1/tokens/NAME`` revokes one. The same file as
`causelog token` (``CAUSELOG_TOKENS_FILE``) is edited, under its lock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.web import Request, Response, View

from pipeline import tokens
from pipeline.errors import ConfigError
from pipeline.stream.jsonio import answer


def register_tokens(app: faust.App, ctx: Any) -> None:
    """Add the token routes to ``app`` (``ctx`` is the API's :class:`ApiContext`)."""
    path = ctx.settings.tokens_path


    async def blocking(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @app.page("/v1/tokens")
    class Tokens(View):
        async def get(self, request: Request) -> Response:
            found = await blocking(tokens.load, path)
            return answer(self, {"tokens": [{"name": t.name, "role": t.role, "created": t.created} for t in found]})

        async def post(self, request: Request) -> Response:
            try:
                body = await request.json()
                name, role = str(body["name"]), str(body["role"])
                value = await blocking(tokens.create, path, name, role)
            except (ValueError, KeyError, TypeError) as exc:
                return answer(self, {"error": f"bad request: {exc!r} (send {{\"name\": ..., \"role\": ...}})"}, 400)
            except ConfigError as exc:
                return answer(self, {"error": str(exc)}, 400)
            return answer(self, {"name": name, "role": role, "token": value}, 201)

    @app.page("/v1/tokens/{name}")
    class OneToken(View):
        async def delete(self, request: Request, name: str) -> Response:
            try:
                gone = await blocking(tokens.revoke, path, name)
            except ConfigError as exc:
                return answer(self, {"error": str(exc)}, 404)
            return answer(self, {"revoked": gone.name, "role": gone.role})
