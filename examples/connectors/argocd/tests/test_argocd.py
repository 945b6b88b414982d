"""The Argo CD connector against the public API only: mapping, fetch from a fake Argo CD API,
resuming from the cursor, and a bad history entry going to the DLQ with its origin."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from causelog_argocd import ArgoCD

from pipeline import connect as c

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def application(name: str, history: list[dict[str, Any]], namespace: str = "argocd") -> dict[str, Any]:
    """An Application as GET /api/v1/applications lists it (the fields the connector reads)."""
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc",
                                                           "namespace": "prod"}},
            "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}, "history": history}}


def entry(i: int, *, user: str | None = "alice@acme.io", **extra: Any) -> dict[str, Any]:
    by = {"username": user} if user else {"automated": True}
    return {"id": i, "revision": SHA, "deployedAt": f"2026-11-27T01:{i:02d}:47Z",
            "deployStartedAt": f"2026-11-27T01:{i:02d}:00Z", "initiatedBy": by,
            "source": {"repoURL": "https://github.com/acme/api", "path": "deploy", "targetRevision": "HEAD"},
            **extra}


@contextmanager
def argocd_api(apps: list[dict[str, Any]]) -> Iterator[str]:
    """A stand-in for the Argo CD API server, serving ``apps``; yields its URL."""
    body = json.dumps({"items": apps}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/api/v1/applications" and self.headers.get("Authorization") == "Bearer t0k"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", "t0k")


def test_a_history_entry_is_a_deploy_linked_to_its_commit() -> None:
    connector = ArgoCD("https://argocd.acme.io/")
    rec = c.record({"app": {"metadata": application("api", [])["metadata"], "destination": {"namespace": "prod"}},
                    "entry": entry(3)}, cursor={"argocd/api": 3}, origin="argocd/api#3")
    [event] = connector.to_events(rec)
    assert event.id == c.event_id("argocd:https://argocd.acme.io", "uid-api", 3)
    assert (event.type, event.outcome, event.action) == ("deploy.succeeded", "success", "sync")
    assert (event.actor.id, event.actor.kind, event.actor.assurance) == ("alice@acme.io", "human", "authenticated")
    assert (event.target.id, event.target.service, event.target.environment) == ("argocd/api", "api", "prod")
    assert event.links == (f"commit:{SHA}", "deploy:argocd:argocd/api:3")
    assert c.to_micros(event.time) == c.to_micros(c.parse_time("2026-11-27T01:03:47Z"))
    automated = rec.payload | {"entry": entry(4, user=None)}
    [robot] = connector.to_events(c.record(automated, cursor=None, origin="argocd/api#4"))
    assert (robot.actor.id, robot.actor.kind) == ("argocd-application-controller", "service")


def test_runs_resume_after_the_cursor_and_bad_entries_go_to_the_dlq() -> None:
    apps = [application("web", [entry(1), entry(2)]),
            application("api", [entry(1), entry(2, deployedAt=None), entry(3)])]
    sink = c.MemorySink()
    with argocd_api(apps) as url:
        first = c.run_connector(ArgoCD(url), sink=sink, progress=False)
        assert (first.records, first.events, first.rejected) == (5, 4, 1)
        [(original, headers)] = sink.dlq
        assert headers["origin"] == "argocd:argocd/api#2" and headers["reason"] == "invalid_value"
        assert json.loads(original)["entry"]["id"] == 2
        assert {(e.target.name, e.source_seq) for e in sink.events} == {("web", 1), ("web", 2), ("api", 1),
                                                                        ("api", 3)}
        assert sink.cursors[-1] == {"argocd/api": 3, "argocd/web": 2}

        again = c.run_connector(ArgoCD(url), sink=sink, progress=False)
        assert (again.records, len(sink.events)) == (0, 4)

    apps[0]["status"]["history"].append(entry(3))
    with argocd_api(apps) as url:
        later = c.run_connector(ArgoCD(url), sink=sink, progress=False)
    assert (later.records, later.events) == (1, 1)
    assert sink.events[-1].links[-1] == "deploy:argocd:argocd/web:3"
