"""Argo CD -> causelog: one deploy event per sync in an Application's history (public API only)."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

from pipeline import connect as c


class ArgoCD:
    """``causelog ingest plugin argocd -o server=https://argocd.example.com`` (token in $ARGOCD_AUTH_TOKEN)."""

    name = "argocd"

    def __init__(self, server: str, token_env: str = "ARGOCD_AUTH_TOKEN") -> None:
        self.instance = self.server = server.rstrip("/")
        self.token = os.environ.get(token_env, "")

    def fetch(self, cursor: dict[str, int] | None) -> Iterator[c.Record]:
        """Every history entry newer than the last one seen per application (cursor: app -> id)."""
        req = urllib.request.Request(f"{self.server}/api/v1/applications",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            apps = json.load(resp).get("items") or []
        seen = dict(cursor or {})
        for app in sorted(apps, key=lambda a: (a["metadata"].get("namespace", ""), a["metadata"]["name"])):
            key = f"{app['metadata'].get('namespace', '')}/{app['metadata']['name']}"
            meta = {"metadata": app["metadata"], "destination": app.get("spec", {}).get("destination", {})}
            for entry in sorted(app.get("status", {}).get("history") or [], key=lambda h: h.get("id", 0)):
                if entry.get("id", 0) > seen.get(key, -1):
                    seen[key] = entry.get("id", 0)
                    yield c.record({"app": meta, "entry": entry}, cursor=dict(seen), origin=f"{key}#{entry.get('id')}")

    def to_events(self, rec: c.Record) -> list[c.Event]:
        """A history entry is a sync that succeeded: deploy.succeeded, linked by commit and deploy id."""
        app: dict[str, Any] = rec.payload["app"]
        h: dict[str, Any] = rec.payload["entry"]
        meta, key = app["metadata"], rec.origin.rpartition("#")[0]
        by = h.get("initiatedBy") or {}
        user = by.get("username") or ("argocd-application-controller" if by.get("automated") else None)
        revision = h.get("revision") or (h.get("revisions") or [None])[0]
        return [c.envelope(
            source=f"argocd:{self.server}", identity=[meta.get("uid") or key, h["id"]], type="deploy.succeeded",
            time=h.get("deployedAt"), action="sync", outcome="success",
            actor=c.actor(user, kind="human" if by.get("username") else "service", assurance="authenticated"),
            target=c.target("argocd.application", key, name=meta["name"], service=meta["name"],
                            environment=app["destination"].get("namespace", "")),
            links=[c.commit_link(revision), c.deploy_link("argocd", key, h["id"])],
            raw=c.redact(h), source_seq=h["id"],
        )]
