"""``causelog ingest github-webhook --listen`` / ``k8s-audit --listen``: the HTTP receivers.

:func:`github_kind` and :func:`k8s_kind` say how each kind authorizes, splits and converts a
request (pure; the shared plumbing is :mod:`pipeline.sources.receiver`); :func:`serve_github`
and :func:`serve_k8s` run them against Kafka until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any
from urllib.parse import parse_qs

import orjson

from pipeline.errors import ConfigError, DecodeError
from pipeline.model import Event
from pipeline.model.codec import check_depth
from pipeline.settings import Settings
from pipeline.sources.receiver import (
    MAX_BODY_DEPTH,
    Kind,
    Receiver,
    Request,
    parse_listen,
    serve,
    verify_github_signature,
)
from pipeline.sources.runner import RawRecord

DEFAULT_GITHUB_LISTEN = "127.0.0.1:8089"
DEFAULT_K8S_LISTEN = "127.0.0.1:8090"

log = logging.getLogger("causelog.receiver")


def _loads(body: bytes, what: str) -> Any:
    check_depth(body, MAX_BODY_DEPTH)  # a form-encoded GitHub payload is only seen here
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("bad_json", f"the {what} is not JSON: {exc}") from None


def _short(value: str | None, limit: int = 80) -> str:
    return "-" if not value else value[:limit]


# -- GitHub ----------------------------------------------------------------------------------


def github_kind(secret: bytes, scope: str) -> Kind:
    """GitHub webhook deliveries: signature first, then one record per delivery."""
    from pipeline.sources import github

    def authorize(req: Request) -> bool:
        return verify_github_signature(secret, req.body, req.header("x-hub-signature-256"))

    def split(req: Request) -> list[RawRecord]:
        body = req.body
        if (req.header("content-type") or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("utf-8", "replace"))
            if "payload" not in form:
                raise DecodeError("missing_field", "a form-encoded delivery needs a `payload` field",
                                  field="payload")
            body = form["payload"][0].encode()
        payload = _loads(body, "webhook body")
        event = (req.header("x-github-event") or "").strip()
        delivery = (req.header("x-github-delivery") or "").strip() or None
        meta = {"event": event, "delivery": delivery, "received_at": req.received_at}
        return [RawRecord(payload=(payload, meta), cursor={"delivery": delivery, "event": event},
                          origin=origin(req), original=req.body)]

    def origin(req: Request) -> str:
        delivery = (req.header("x-github-delivery") or "").strip()
        return f"delivery:{delivery[:200]}" if delivery else f"http:{req.request_id}"

    def convert(rec: RawRecord) -> list[Event]:
        payload, meta = rec.payload
        return github.to_events(payload, event_name=meta["event"], delivery_id=meta["delivery"], scope=scope,
                                received_at=meta["received_at"])

    def describe(req: Request) -> str:
        return f"event={_short(req.header('x-github-event'))} delivery={_short(req.header('x-github-delivery'))}"

    return Kind("github-webhook", split=split, convert=convert, authorize=authorize, describe=describe,
                origin=origin, content_types=("application/json", "application/x-www-form-urlencoded"))


# -- Kubernetes audit ------------------------------------------------------------------------


def k8s_kind(scope: str, cluster: str | None) -> Kind:
    """Kubernetes audit webhook batches (``EventList``): one record per audit event."""
    from pipeline.sources import k8s_audit as k8s

    def split(req: Request) -> list[RawRecord]:
        items = k8s.split_records(_loads(req.body, "audit batch"))
        out = []
        for i, item in enumerate(items):
            audit_id = item.get("auditID")
            origin = f"audit:{audit_id}" if isinstance(audit_id, str) and audit_id else f"http:{req.request_id}#{i}"
            out.append(RawRecord(payload=item, cursor={"auditID": audit_id}, origin=origin,
                                 original=orjson.dumps(item)))
        return out

    def convert(rec: RawRecord) -> list[Event]:
        return k8s.to_events(rec.payload, scope=scope, cluster=cluster)

    return Kind("k8s-audit", split=split, convert=convert)


# -- serving ---------------------------------------------------------------------------------


def _setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def _run(s: Settings, kind: Kind, listen: str) -> None:
    from pipeline.bus import ensure_topics
    from pipeline.bus.kafka import TOPIC_MAX_MESSAGE_BYTES
    from pipeline.bus.sink import KafkaSink
    from pipeline.hashkey import install

    host, port = parse_listen(listen)
    install(s)
    _setup_logging()
    ensure_topics(s)
    # One transactional producer per receiver; a restarted receiver fences its predecessor.
    instance = f"{kind.name}:listen:{socket.gethostname()}:{host}:{port}"
    receiver = Receiver(kind, lambda: KafkaSink(s, instance, timeout=15.0), topic=s.topic_changes,
                        dlq=s.topic_dlq, max_record_bytes=TOPIC_MAX_MESSAGE_BYTES - 64 * 1024)

    def ready(url: str) -> None:
        log.info("%s: listening on %s (POST deliveries, GET /health) -> %s, bad input -> %s",
                 kind.name, url, s.topic_changes, s.topic_dlq)

    t = serve(receiver, listen, ready=ready)
    log.info("%s: stopped after %d requests: %d events, %d rejected to the DLQ, %d refused (401), "
             "%d invalid (4xx, nothing produced), %d failures (503/500)", kind.name, t.requests, t.events,
             t.rejected, t.refused, t.invalid, t.failed)


def read_secret(secret_env: str | None, environ: dict[str, str] | None = None) -> bytes:
    """The webhook secret from the variable ``--secret-env`` names (ConfigError when unset/empty)."""
    if not secret_env:
        raise ConfigError("--listen needs --secret-env VAR: the name of the variable holding the webhook secret")
    value = (os.environ if environ is None else environ).get(secret_env, "")
    if not value:
        raise ConfigError(f"--secret-env {secret_env}: the variable {secret_env} is not set or empty; "
                          "export the GitHub webhook secret in it")
    return value.encode()


def serve_github(s: Settings, listen: str | None, secret_env: str | None, scope: str | None) -> None:
    """Receive GitHub webhooks on ``listen`` until SIGTERM/SIGINT."""
    secret = read_secret(secret_env)
    _run(s, github_kind(secret, scope or s.scope), listen or DEFAULT_GITHUB_LISTEN)


def serve_k8s(s: Settings, listen: str | None, scope: str | None, cluster: str | None) -> None:
    """Receive Kubernetes audit webhook batches on ``listen`` until SIGTERM/SIGINT."""
    _run(s, k8s_kind(scope or s.scope, cluster), listen or DEFAULT_K8S_LISTEN)
