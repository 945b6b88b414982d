"""The worker's integrity routes (the embedded store is only reachable through the worker).

Role needed (DESIGN.md §10): ``auditor`` for both routes (they read whole stored envelopes and
every log); the bearer-token check is added where the API's roles are enforced.

- ``POST /v1/integrity/verify`` ``{"log": N?, "since": ISO?, "vkeys": [...]}`` -> the
  :class:`~pipeline.store.integrity.Verification` JSON;
- ``POST /v1/integrity/evidence`` ``{"ids": [...], "query": "...", "vkeys": [...]}`` ->
  ``{"files": {name: base64}}``;
- ``POST /v1/integrity/holds`` ``{"action": "add"|"release"|"list", "target", "reason", "id"}``
  and ``POST /v1/integrity/prune`` ``{"dry_run": bool}``: role ``admin`` (they change what is kept).
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View

from pipeline.errors import CauselogError, IntegrityError
from pipeline.integrity.keyfile import read_key, trusted
from pipeline.integrity.retention import load_policy
from pipeline.store import integrity, retention
from pipeline.stream.jsonio import answer

if TYPE_CHECKING:
    from pipeline.stream.api import ApiContext


def register_integrity(app: faust.App, ctx: ApiContext) -> None:
    """Add ``/v1/integrity/verify`` and ``/v1/integrity/evidence`` to ``app``."""
    settings, store = ctx.settings, ctx.store
    reads = store.reader()  # verify and evidence read on read handles, never under the writer's lock

    async def run(fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(ctx.reads, fn)


    async def body_of(request: Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        vkeys = body.get("vkeys") or []
        if not isinstance(vkeys, list) or not all(isinstance(v, str) for v in vkeys):
            raise ValueError("'vkeys' must be a list of verifier keys")
        return body

    @app.page("/v1/integrity/verify")
    class Verify(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await body_of(request)
                log = None if body.get("log") is None else int(body["log"])
                since = datetime.fromisoformat(body["since"]) if body.get("since") else None
                keys = trusted(settings.signing_key_path, body.get("vkeys") or [])
            except (ValueError, TypeError, IntegrityError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                result = await run(lambda: integrity.verify(reads, settings.topic_changes, keys, log=log, since=since))
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, result.to_json())

    @app.page("/v1/integrity/holds")
    class Holds(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await body_of(request)
                action = body.get("action", "list")
                now = datetime.now(UTC)
                if action == "add":
                    target, reason = str(body["target"]), str(body["reason"])
                    if not target or not reason.strip():
                        raise ValueError("a hold needs a target and a reason")
                    fn: Any = lambda: {"id": retention.add_hold(store, target, reason, now)}  # noqa: E731
                elif action == "release":
                    hold_id = str(body["id"])
                    fn = lambda: {"released": retention.release_hold(store, hold_id, now)}  # noqa: E731
                elif action == "list":
                    fn = lambda: {"holds": retention.holds(reads)}  # noqa: E731
                else:
                    raise ValueError(f"unknown action {action!r}")
            except (ValueError, TypeError, KeyError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                return answer(self, await run(fn))
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)

    @app.page("/v1/integrity/prune")
    class Prune(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await body_of(request)
                policy = load_policy(settings.retention_path)
                signer = read_key(settings.signing_key_path)
            except (ValueError, TypeError, CauselogError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                result = await run(lambda: retention.prune(store, settings.topic_changes, policy, signer,
                                                           datetime.now(UTC), dry_run=bool(body.get("dry_run"))))
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, vars(result))

    @app.page("/v1/integrity/evidence")
    class Evidence(View):
        async def post(self, request: Request) -> Response:
            try:
                body = await body_of(request)
                ids = body["ids"]
                if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                    raise ValueError("'ids' must be a non-empty list of event ids")
                keys = trusted(settings.signing_key_path, body.get("vkeys") or [])
            except (ValueError, TypeError, KeyError, IntegrityError) as exc:
                return answer(self, {"error": f"bad request: {exc}"}, 400)
            try:
                files = await run(lambda: integrity.evidence(reads, settings.topic_changes, ids, keys,
                                                             str(body.get("query") or "")))
            except IntegrityError as exc:
                return answer(self, {"error": str(exc)}, 400)
            except CauselogError as exc:
                return answer(self, {"error": str(exc)}, 503)
            return answer(self, {"files": {k: base64.b64encode(v).decode() for k, v in files.items()}})
