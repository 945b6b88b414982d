"""`causelog report` with a reader's or an auditor's token (found walking the README as a user):
/v1/report was not in the route table, so it needed admin and answered 403 to its audience; and
like every read of events it is recorded as a ``causelog.query`` event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline import tokens
from pipeline.settings import load
from pipeline.stream import audit, auth


async def _report(request: web.Request) -> web.Response:
    return web.json_response({"summary": {}, "by_kind": [], "truncated": False})


def test_report_is_a_read_for_reader_and_auditor_and_is_audited(tmp_path: Path) -> None:
    settings = load({"CAUSELOG_HOME": str(tmp_path)})
    made = {role: tokens.create(settings.tokens_path, f"{role}-1", role) for role in tokens.ROLES}
    sent: list[tuple[bytes, bytes]] = []
    app = web.Application(middlewares=[auth.middleware(tokens.TokenFile(settings.tokens_path)),
                                       audit.middleware(settings, lambda k, v: sent.append((k, v)))])
    app.router.add_get("/v1/report", _report)
    statuses: dict[str, int] = {}

    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            for role, token in made.items():
                resp = await client.get("/v1/report?since=2026-11-01T00:00:00Z",
                                        headers={"Authorization": f"Bearer {token}"})
                statuses[role] = resp.status

    asyncio.run(main())
    assert statuses == {"reader": 200, "auditor": 200, "admin": 200, "ingest": 403}
    recorded = [orjson.loads(v) for _, v in sent]
    assert [(e["type"], e["actor"]["id"], e["target"]["id"]) for e in recorded] == [
        ("causelog.query", f"{role}-1", "/v1/report") for role in ("reader", "auditor", "admin")]
