"""Bearer-token authentication and roles for every route of the worker's API (one aiohttp middleware).

Every request but ``GET /health`` and ``GET /metrics`` needs ``Authorization: Bearer <token>``
of a token in the token file (:mod:`pipeline.tokens`). Missing, unknown or revoked: 401. A
role too weak for the route: 403. Both answer JSON ``{"error": ...}``. Routes are matched by
path prefix in :data:`ROUTE_ROLES`; any other path (Faust's own pages included) needs ``admin``,
so a route added later is closed until it is listed here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pipeline.errors import CauselogError
from pipeline.stream.jsonio import dumps
from pipeline.tokens import Token, TokenFile, role_allows

log = logging.getLogger("causelog.api.auth")

#: Request key holding the :class:`pipeline.tokens.Token` a request was authenticated with.
PRINCIPAL: web.RequestKey[Token] = web.RequestKey("causelog.token", Token)

#: Paths anyone may GET.
PUBLIC = frozenset({"/health", "/metrics"})

#: Route prefix -> weakest role allowed. Anything not listed needs ``admin``.
ROUTE_ROLES: tuple[tuple[str, str], ...] = (
    ("/v1/timeline", "reader"),
    ("/v1/why", "reader"),
    ("/v1/chain", "reader"),
    ("/v1/linked", "reader"),
    ("/v1/session", "reader"),
    ("/v1/trace", "reader"),
    ("/v1/who", "reader"),
    ("/v1/sql", "reader"),
    ("/v1/alerts", "reader"),
    ("/v1/stats", "reader"),
    # The accountability report reads what why/timeline/who already show a reader; its audience
    # (auditors, reviewers) must not need an admin token.
    ("/v1/report", "reader"),
    ("/v1/integrity/verify", "auditor"),
    ("/v1/integrity/evidence", "auditor"),
)

#: Route prefixes that only read with GET: any other method writes (the rules runner storing
#: alerts and deliveries) and needs ``admin``.
READ_ONLY_BY_GET = ("/v1/alerts",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def required_role(path: str, method: str = "GET") -> str:
    """The weakest role that may call ``path`` with ``method``."""
    if method not in ("GET", "HEAD") and any(path == p or path.startswith(p + "/") for p in READ_ONLY_BY_GET):
        return "admin"
    for prefix, role in ROUTE_ROLES:
        if path == prefix or path.startswith(prefix + "/"):
            return role
    return "admin"


def _deny(status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="causelog"'} if status == 401 else None
    return web.Response(body=dumps({"error": reason}), status=status, content_type="application/json",
                        headers=headers)


def authenticate(tokens: TokenFile, authorization: str | None) -> Token | str:
    """The token an ``Authorization`` header carries, or the reason it is refused."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return "missing bearer token: send 'Authorization: Bearer <token>' (see `causelog token create`)"
    token = tokens.find(presented)
    return token if token is not None else "unknown or revoked token"


def middleware(tokens: TokenFile) -> Any:
    """The aiohttp middleware checking every request against ``tokens``."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path in PUBLIC:
            return await handler(request)
        try:
            found = authenticate(tokens, request.headers.get("Authorization"))
        except CauselogError as exc:  # an unreadable token file closes the door, it never opens it
            log.error("token check failed: %s", exc)
            return _deny(503, f"cannot check tokens: {exc}")
        if isinstance(found, str):
            return _deny(401, found)
        needed = required_role(request.path, request.method)
        if not role_allows(found.role, needed):
            return _deny(403, f"token {found.name!r} has role {found.role}; {request.path} needs {needed}")
        request[PRINCIPAL] = found
        return await handler(request)

    return check
