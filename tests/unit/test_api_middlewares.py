"""The API's token middleware and query audit (pipeline/stream/auth.py, audit.py) on a bare aiohttp app."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from pipeline import tokens
from pipeline.model import decode, encode
from pipeline.settings import load
from pipeline.stream import audit, auth

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "change_event.schema.json").read_text())


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _rows(request: web.Request) -> web.Response:
    return web.json_response({"columns": ["n"], "rows": [[1], [2], [3]]})


async def _sql(request: web.Request) -> web.Response:
    body = await request.json()
    if "file(" in body["sql"]:
        return web.json_response({"error": "query rejected: readonly"}, status=400)
    return web.json_response({"columns": ["n"], "rows": [[1]], "truncated": False})


def _app(tmp_path: Path, sent: list[tuple[bytes, bytes]], *, fail: bool = False) -> web.Application:
    settings = load({"CAUSELOG_HOME": str(tmp_path)})

    def send(key: bytes, value: bytes) -> None:
        if fail:
            from pipeline.errors import BusError
            raise BusError("broker gone")
        sent.append((key, value))

    app = web.Application(middlewares=[auth.middleware(tokens.TokenFile(settings.tokens_path)),
                                       audit.middleware(settings, send)])
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/timeline", _rows)
    app.router.add_get("/v1/stats", _rows)
    app.router.add_post("/v1/sql", _sql)
    app.router.add_get("/v1/linked/{kind}/{ident}", _rows)
    app.router.add_get("/v1/integrity/verify", _rows)
    app.router.add_post("/v1/tokens", _rows)
    app.router.add_get("/v1/alerts", _rows)
    app.router.add_post("/v1/alerts", _rows)
    app.router.add_get("/anything/else", _rows)
    return app


def _run(tmp_path: Path, script: Any, *, fail: bool = False) -> list[tuple[bytes, bytes]]:
    sent: list[tuple[bytes, bytes]] = []

    async def main() -> None:
        async with TestClient(TestServer(_app(tmp_path, sent, fail=fail))) as client:
            await script(client)

    asyncio.run(main())
    return sent


def _tokens(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "tokens.json"
    return {role: tokens.create(path, f"{role}-1", role) for role in tokens.ROLES}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_is_public_everything_else_needs_a_token(tmp_path: Path) -> None:
    _tokens(tmp_path)

    async def script(client: TestClient) -> None:
        assert (await client.get("/health")).status == 200
        for path in ("/v1/timeline", "/v1/stats", "/v1/integrity/verify", "/anything/else"):
            resp = await client.get(path)
            assert resp.status == 401 and "bearer token" in (await resp.json())["error"]
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            resp = await client.get(path, headers=bearer("clt_wrong"))
            assert (resp.status, (await resp.json())["error"]) == (401, "unknown or revoked token")

    _run(tmp_path, script)


@pytest.mark.parametrize(("role", "allowed"), [
    ("reader", {"/v1/timeline", "/v1/stats"}),
    ("auditor", {"/v1/timeline", "/v1/stats", "/v1/integrity/verify"}),
    ("admin", {"/v1/timeline", "/v1/stats", "/v1/integrity/verify", "/anything/else"}),
])
def test_roles(tmp_path: Path, role: str, allowed: set[str]) -> None:
    made = _tokens(tmp_path)

    async def script(client: TestClient) -> None:
        for path in ("/v1/timeline", "/v1/stats", "/v1/integrity/verify", "/anything/else"):
            resp = await client.get(path, headers=bearer(made[role]))
            if path in allowed:
                assert resp.status == 200, path
            else:
                body = await resp.json()
                assert resp.status == 403 and f"has role {role}" in body["error"], (path, body)
        resp = await client.post("/v1/tokens", headers=bearer(made[role]), json={})
        assert resp.status == (200 if role == "admin" else 403)
        # Listing alerts is a read; storing them (the rules runner) is not.
        assert (await client.get("/v1/alerts", headers=bearer(made[role]))).status == 200
        resp = await client.post("/v1/alerts", headers=bearer(made[role]), json={})
        assert resp.status == (200 if role == "admin" else 403)

    _run(tmp_path, script)


def test_reads_are_audited_with_a_valid_envelope(tmp_path: Path) -> None:
    made = _tokens(tmp_path)

    async def script(client: TestClient) -> None:
        assert (await client.get("/v1/timeline?since=x", headers=bearer(made["reader"]))).status == 200
        assert (await client.get("/v1/linked/session/abc", headers=bearer(made["reader"]))).status == 200
        sql = {"sql": "SELECT * FROM events WHERE actor_id = 'erin'", "params": {"t": "x"}}
        assert (await client.post("/v1/sql", headers=bearer(made["auditor"]), json=sql)).status == 200
        bad = {"sql": "SELECT * FROM file('/etc/passwd')"}
        assert (await client.post("/v1/sql", headers=bearer(made["reader"]), json=bad)).status == 400
        # Not a read of events: not audited. Refused requests: no token, nothing to attribute.
        assert (await client.get("/v1/stats", headers=bearer(made["reader"]))).status == 200
        assert (await client.get("/v1/timeline")).status == 401

    sent = _run(tmp_path, script)
    events = [decode(value) for _, value in sent]
    validator = Draft202012Validator(SCHEMA)
    for _, value in sent:
        validator.validate(orjson.loads(value))
    assert [(e.type, e.actor.id, e.actor.assurance, e.target.id, e.outcome) for e in events] == [
        ("causelog.query", "reader-1", "authenticated", "/v1/timeline", "success"),
        ("causelog.query", "reader-1", "authenticated", "/v1/linked/session/abc", "success"),
        ("causelog.query", "auditor-1", "authenticated", "/v1/sql", "success"),
        ("causelog.query", "reader-1", "authenticated", "/v1/sql", "failure"),
    ]
    assert events[0].raw["rows"] == 3 and events[0].raw["query"] == {"since": "x"}
    assert events[1].target.name == "/v1/linked/{kind}/{ident}"
    assert events[2].raw["sql"]["normalized"] == "SELECT * FROM events WHERE actor_id = ?"
    assert events[2].raw["sql"]["params"] == ["t"] and "erin" not in sent[2][1].decode()
    assert len({e.id for e in events}) == 4
    assert all(key == b"default" for key, _ in sent)


def test_a_read_that_cannot_be_recorded_is_withheld(tmp_path: Path) -> None:
    made = _tokens(tmp_path)

    async def script(client: TestClient) -> None:
        resp = await client.get("/v1/timeline", headers=bearer(made["reader"]))
        body = await resp.json()
        assert resp.status == 503 and "audit trail" in body["error"] and "rows" not in body

    _run(tmp_path, script, fail=True)


def test_query_event_id_is_a_function_of_its_inputs() -> None:
    token = tokens.Token("a", "reader", "sha256:x", "")
    at = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
    rec = audit.QueryRecord(token=token, method="GET", path="/v1/who", route="/v1/who", query={"actor": "erin"},
                            status=200, rows=2, sql=None, started=at)
    one = audit.query_event(rec, source="causelog://api/x", scope="s", seq="1")
    assert one == audit.query_event(rec, source="causelog://api/x", scope="s", seq="1")
    assert one.id != audit.query_event(rec, source="causelog://api/x", scope="s", seq="2").id
    assert decode(encode(one)) == one
