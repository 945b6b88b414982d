"""``causelog ingest cloudevents --listen`` and ``causelog ingest webhook --listen --map``.

Both are receivers on :mod:`pipeline.sources.receiver` (durable before ack: a 2xx only once the
request's events are committed in one Kafka transaction). What is theirs:

- :func:`cloudevents_kind`: the CloudEvents HTTP binding (structured, batched, binary mode;
  :mod:`pipeline.sources.cloudevents`); a batch is all or nothing.
- :func:`webhook_kind`: any JSON webhook through a declarative mapping
  (:mod:`pipeline.sources.webhook_map`).
- Authentication (:mod:`pipeline.sources.http_auth`): ``Authorization: Bearer <token>`` whose
  hash is in ``--token-file`` with role ``ingest``, or ``X-Causelog-Signature-256`` (HMAC-SHA256
  of the body with the secret in ``--secret-env``). Refused -> 401, a media type that is not
  spoken -> 415: nothing produced, not even to the DLQ (unauthenticated input must not fill it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson

from pipeline.errors import ConfigError, DecodeError
from pipeline.model import Event
from pipeline.settings import Settings
from pipeline.sources import cloudevents as ce
from pipeline.sources.http_auth import TokenFile, load_token_hashes, request_authorizer
from pipeline.sources.receiver import Kind, Request, Response
from pipeline.sources.runner import RawRecord

DEFAULT_CLOUDEVENTS_LISTEN = "127.0.0.1:8091"
DEFAULT_WEBHOOK_LISTEN = "127.0.0.1:8092"


def _unauthorized() -> Response:
    return Response(401, {"error": "unauthorized", "message": "send Authorization: Bearer <token with role ingest> "
                                                              "or an X-Causelog-Signature-256 HMAC of the body"},
                    {"WWW-Authenticate": 'Bearer realm="causelog ingest"'})


def _unsupported(media: str | None, expected: str) -> Response:
    return Response(415, {"error": "unsupported_media_type",
                          "message": f"Content-Type {media or '(none)'!r} is not accepted: {expected}"})


def _short(value: str | None, limit: int = 80) -> str:
    return "-" if not value else value[:limit]


def cloudevents_kind(authorize: Any, scope: str) -> Kind:
    """CloudEvents over HTTP: authorize + media type first, then one record per request."""

    def admit(req: Request) -> Response | None:
        if not authorize(req.headers, req.body):
            return _unauthorized()
        if ce.media_mode(req.headers) is None:
            return _unsupported(req.header("content-type"), f"{ce.STRUCTURED}, {ce.BATCH}, or binary mode "
                                                            "(ce-specversion, ce-id, ce-source, ce-type headers)")
        return None

    def split(req: Request) -> list[RawRecord]:
        mode = ce.media_mode(req.headers) or "binary"
        events = ce.split(mode, req.headers, req.body)
        # Binary mode: the DLQ keeps the structured equivalent (headers + data), replayable as is.
        original = orjson.dumps(events[0]) if mode == "binary" else req.body
        return [RawRecord(payload=(mode, events, req.received_at), cursor={"request": req.request_id},
                          origin=origin(req), original=original)]

    def convert(rec: RawRecord) -> list[Event]:
        mode, events, received_at = rec.payload
        return ce.to_events(events, scope=scope, received_at=received_at, batch=mode == "batch")

    def origin(req: Request) -> str:
        source, ident = req.header("ce-source"), req.header("ce-id")
        if source and ident:
            return f"event:{source[:160]}#{ident[:80]}"
        return f"http:{req.request_id}"

    def describe(req: Request) -> str:
        mode = ce.media_mode(req.headers) or "-"
        return f"mode={mode} type={_short(req.header('ce-type'))} id={_short(req.header('ce-id'))}"

    return Kind("cloudevents", split=split, convert=convert, admit=admit, describe=describe, origin=origin,
                content_types=())  # binary mode carries any media type; admit judges it


def _is_json(media: str | None) -> bool:
    m = (media or "").split(";", 1)[0].strip().lower()
    return m in ("application/json", "text/json") or (m.startswith("application/") and m.endswith("+json"))


def webhook_kind(authorize: Any, mapping: Any, scope: str) -> Kind:
    """A JSON webhook through a mapping: one event per delivery."""
    from pipeline.sources import webhook_map

    def admit(req: Request) -> Response | None:
        if not authorize(req.headers, req.body):
            return _unauthorized()
        if not _is_json(req.header("content-type")):
            return _unsupported(req.header("content-type"), "send JSON (application/json)")
        return None

    def split(req: Request) -> list[RawRecord]:
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("bad_json", f"the webhook body is not JSON: {exc}") from None
        return [RawRecord(payload=body, cursor={"request": req.request_id}, origin=f"http:{req.request_id}",
                          original=req.body)]

    def convert(rec: RawRecord) -> list[Event]:
        return webhook_map.to_events(mapping, rec.payload, scope=scope)

    return Kind(f"webhook:{mapping.name}", split=split, convert=convert, admit=admit)


def authorizer(secret_env: str | None, token_file: Path | None, default_tokens: Path | None = None) -> Any:
    """The request check from the options; ConfigError when neither is given or usable.

    Without either option the deployment's token file (``causelog token create --role ingest``)
    is used when it holds an ``ingest`` token."""
    if not secret_env and token_file is None and default_tokens is not None and default_tokens.exists():
        token_file = default_tokens
    if not secret_env and token_file is None:
        raise ConfigError("--listen needs a token with role ingest (`causelog token create --role ingest --name N`), "
                          "--token-file FILE (hashes of bearer tokens with role ingest) "
                          "and/or --secret-env VAR (HMAC secret): a receiver must know whom to trust")
    secret = None
    if secret_env:
        value = os.environ.get(secret_env, "")
        if not value:
            raise ConfigError(f"--secret-env {secret_env}: the variable {secret_env} is not set or empty")
        secret = value.encode()
    bearer = None
    if token_file is not None:
        if not load_token_hashes(token_file):
            raise ConfigError(f"token file {token_file} holds no token with role ingest")
        bearer = TokenFile(token_file)
    return request_authorizer(secret=secret, bearer=bearer)


_AUTH_OPTIONS = [
    click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="JSON file of bearer token hashes; tokens with role `ingest` may send "
                      "(default: CAUSELOG_TOKENS_FILE, where `causelog token create --role ingest` "
                      "puts them). Re-read when it changes."),
    click.option("--secret-env", metavar="VAR",
                 help="Variable holding an HMAC secret: senders sign the body in X-Causelog-Signature-256: sha256=<hex>."),
    click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE)."),
]


def _auth_options(f: Any) -> Any:
    for option in reversed(_AUTH_OPTIONS):
        f = option(f)
    return f


@click.command("cloudevents")
@click.option("--listen", metavar="HOST:PORT", default=DEFAULT_CLOUDEVENTS_LISTEN, show_default=True,
              help="Address to receive CloudEvents on (HTTP POST, any path; GET /health).")
@_auth_options
@click.pass_obj
def cloudevents(s: Settings, listen: str, token_file: Path | None, secret_env: str | None, scope: str | None) -> None:
    """Receive CloudEvents 1.0 over HTTP: binary, structured and batched mode.

    Answers 200 only once the request's events are committed in Kafka; a batch is stored whole
    or not at all. Invalid events: 400 with the reason, the request in the DLQ. No or bad
    credentials: 401; another media type: 415 (nothing produced). correlationid/causationid ->
    request: links, traceparent -> trace:, the authcontext extension -> actor.
    """
    from pipeline.cli.ingest_listen import _run

    _run(s, cloudevents_kind(authorizer(secret_env, token_file, s.tokens_path), scope or s.scope), listen)


@click.command("webhook")
@click.option("--map", "mapping_spec", required=True, metavar="MAPPING",
              help="Mapping YAML file, or a shipped mapping by name (argocd, jenkins).")
@click.option("--listen", metavar="HOST:PORT", is_flag=False, flag_value=DEFAULT_WEBHOOK_LISTEN,
              help=f"Receive webhooks over HTTP on HOST:PORT (alone: {DEFAULT_WEBHOOK_LISTEN}).")
@click.option("--file", "paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Import saved webhook bodies instead: JSON files or directories of them.")
@_auth_options
@click.pass_obj
def webhook(s: Settings, mapping_spec: str, listen: str | None, paths: tuple[Path, ...], token_file: Path | None,
            secret_env: str | None, scope: str | None) -> None:
    """Turn any JSON webhook into change events with a declarative JMESPath mapping (no code).

    See pipeline/sources/webhook_map.py for the mapping fields; shipped: argocd (Argo CD
    Notifications), jenkins (Jenkins Notification plugin).
    """
    from pipeline.sources import webhook_map

    mapping = webhook_map.load_mapping(mapping_spec)
    if bool(paths) == bool(listen):
        raise click.UsageError("give either --listen HOST:PORT or --file PATH...")
    if listen:
        from pipeline.cli.ingest_listen import _run

        _run(s, webhook_kind(authorizer(secret_env, token_file, s.tokens_path), mapping, scope or s.scope), listen)
        return
    from pipeline.cli.ingest import _run as run_files
    from pipeline.cli.ingest import parse_json
    from pipeline.sources import files

    def convert(rec: RawRecord) -> list[Event]:
        return webhook_map.to_events(mapping, parse_json(rec), scope=scope or s.scope)

    instance = mapping.name + ":" + ",".join(sorted(str(p.resolve()) for p in paths))
    run_files(s, "webhook", instance, lambda c: files.fetch_documents(list(paths), c), convert,
              total=files.total_size(list(paths)))
