"""CloudEvents 1.0 over HTTP -> change events (pure part).

HTTP protocol binding (cloudevents/spec ``cloudevents/bindings/http-protocol-binding.md``):

- **structured** mode: ``Content-Type: application/cloudevents+json``, the body is one event in
  the JSON format (``data`` or ``data_base64``);
- **batched** mode: ``Content-Type: application/cloudevents-batch+json``, a JSON array of such
  events (possibly empty);
- **binary** mode: any other media type with ``ce-specversion`` present; attributes in
  ``ce-<name>`` headers (quoted strings unescaped, percent-decoded, invalid UTF-8 refused),
  ``Content-Type`` is ``datacontenttype`` (a ``ce-datacontenttype`` header is refused), the
  body is ``data``: JSON for a JSON media type, text for ``text/*`` or a charset, else
  ``data_base64``.

:func:`media_mode` tells the mode from the headers alone (``None``: not a CloudEvent, or
another event format such as ``application/cloudevents+xml``: the receiver answers 415).
:func:`split` turns a body into structured events (binary mode becomes its structured JSON
equivalent, which is also what the DLQ keeps). :func:`to_events` validates and maps a list of
events **all or nothing** (one invalid event rejects its whole batch with the index in the
field path: nothing partial is stored).

Mapping onto the envelope:

- ``id`` = ``event_id("cloudevents", source, id)`` (CloudEvents says source + id is unique, so a
  redelivery has the same id); ``source``, ``subject`` as given; ``time`` = ``time`` or, when
  the event has none, when causelog received it;
- ``type``: lower-cased, each ``.``-segment reduced to ``[a-z0-9_-]``
  (``com.example.Deploy.Succeeded`` -> ``com.example.deploy.succeeded``; a one-segment type
  gets a ``cloudevents.`` prefix); the original is in ``raw``;
- ``links``: ``correlationid`` and ``causationid`` (Correlation extension) ->
  ``request:<value>``, and an event carrying either also gets ``request:<its own id>`` (the
  causationid of the events it causes, so cause and effect chain); ``traceparent`` (Distributed Tracing extension) -> ``trace:<trace id>``;
  extension ``links`` (causelog's: typed keys separated by spaces or commas, or a JSON array in
  structured mode, e.g. ``commit:9fceb02d deploy:argocd:api:42``);
- ``actor`` from the AuthContext extension (``authtype``, ``authid``): ``user``/``app_user``
  are humans, ``service_account``/``api_key``/``system`` services; assurance ``claimed`` (the
  sender, authenticated by the receiver, asserts who acted). Without it: unknown actor;
- ``target``: extensions ``targetkind`` (default ``resource``), ``targetid`` (default the
  subject, else the source), ``targetname``, ``environment``, ``service``;
- ``action``: extension ``action``, else the type's last segment; ``outcome``: extension
  ``outcome`` (``success``/``failure``/``unknown``), else read from the type's last segment
  (``succeeded``, ``failed``...);
- ``diff``: when ``data`` is an object with ``before`` and ``after``, their structured diff;
- ``raw``: the event in structured form with secrets redacted; ``source_seq``: extension
  ``sequence``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson

from pipeline.errors import DecodeError
from pipeline.model import LINK_TYPES, Event, event_id
from pipeline.sources._normalize import build, parse_time, slug
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact

__all__ = ["BATCH", "STRUCTURED", "header_value", "media_mode", "split", "to_event", "to_events"]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"

_ATTR = re.compile(r"[a-z0-9]{1,64}")
_REQUIRED = ("id", "source", "type")
_HUMAN = {"user", "app_user"}
_SERVICE = {"service_account", "api_key", "system"}
_SUCCESS = {"succeeded", "success", "successful", "completed", "complete", "finished", "passed", "applied",
            "deployed", "created", "updated", "deleted", "synced", "healthy", "ok", "done", "merged"}
_FAILURE = {"failed", "failure", "error", "errored", "aborted", "cancelled", "canceled", "rejected",
            "degraded", "timedout", "timeout", "unstable"}
_JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]*\+)?json$")


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def media_mode(headers: Mapping[str, str]) -> str | None:
    """``structured``, ``batch`` or ``binary`` from lower-cased headers; None: not acceptable."""
    media = _media(headers.get("content-type"))
    if media == STRUCTURED:
        return "structured"
    if media == BATCH:
        return "batch"
    if media.startswith("application/cloudevents"):
        return None  # another event format (+xml, +avro...): only JSON is spoken here
    return "binary" if headers.get("ce-specversion") is not None else None


def _loads(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("bad_json", f"the {what} is not JSON: {exc}") from None


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def header_value(raw: str) -> str:
    """An attribute from its ``ce-`` header: quoted-string unescaped, then one round of
    percent-decoding (invalid UTF-8 raises UnicodeDecodeError), per the HTTP binding 3.1.3.2."""
    value = raw.strip()
    m = _QUOTED.fullmatch(value)
    if m:  # older senders may quote values (RFC 7230 3.2.6)
        value = re.sub(r"\\(.)", r"\1", m.group(1))
    return unquote(value, errors="strict") if "%" in value else value


def _binary(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    if "ce-datacontenttype" in headers:
        raise DecodeError("invalid_value", "binary mode carries datacontenttype in Content-Type; a "
                                           "ce-datacontenttype header must not be present", field="$.datacontenttype")
    event: dict[str, Any] = {}
    for name, value in headers.items():
        if name.startswith("ce-") and len(name) > 3:
            event[name[3:]] = header_value(value)
    media = headers.get("content-type")
    if media:
        event["datacontenttype"] = media.strip()
    if body:
        if _JSON_TYPE.match(_media(media)):
            event["data"] = _loads(body, "event data (datacontenttype is JSON)")
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None and (_media(media).startswith("text/") or "charset" in (media or "").lower()):
                event["data"] = text
            else:
                event["data_base64"] = base64.b64encode(body).decode()
    return event


def split(mode: str, headers: Mapping[str, str], body: bytes) -> list[Any]:
    """The events of a request, each in structured (JSON format) form, not yet validated."""
    if mode == "binary":
        try:
            return [_binary(headers, body)]
        except UnicodeDecodeError:
            raise DecodeError("invalid_value", "a ce-* header is not valid percent-encoded UTF-8") from None
    doc = _loads(body, "CloudEvents batch" if mode == "batch" else "CloudEvent")
    if mode == "batch":
        if not isinstance(doc, list):
            raise DecodeError("wrong_type", f"a batch is a JSON array of events, got {type(doc).__name__}",
                              field="$")
        return doc
    return [doc]


def _check(ce: Any, at: str) -> dict[str, Any]:
    if not isinstance(ce, dict):
        raise DecodeError("wrong_type", f"a CloudEvent is a JSON object, got {type(ce).__name__}", field=at)
    if ce.get("specversion") != "1.0":
        raise DecodeError("invalid_value", "specversion must be \"1.0\"", field=f"{at}.specversion",
                          value=ce.get("specversion"))
    for name in _REQUIRED:
        value = ce.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DecodeError("missing_field" if value is None else "invalid_value",
                              f"`{name}` is required, a non-empty string", field=f"{at}.{name}", value=value)
    for name in ce:
        if name not in ("data", "data_base64") and not _ATTR.fullmatch(name):
            raise DecodeError("invalid_value", "attribute names are lower-case letters and digits",
                              field=f"{at}.{name}")
    if "data" in ce and "data_base64" in ce:
        raise DecodeError("invalid_value", "`data` and `data_base64` are mutually exclusive", field=at)
    if ce.get("time") is not None and parse_time(ce["time"]) is None:
        raise DecodeError("invalid_value", "`time` must be an RFC 3339 timestamp", field=f"{at}.time",
                          value=ce["time"])
    return ce


def _type(value: str) -> str:
    segments = [slug(s, default="_") for s in value.split(".") if s.strip()]
    if not segments or not segments[0][0].isalpha():
        segments.insert(0, "cloudevents")
    if len(segments) == 1:
        segments.insert(0, "cloudevents")
    return ".".join(segments)


def _str(ce: dict[str, Any], name: str) -> str:
    value = ce.get(name)
    return value.strip() if isinstance(value, str) else ""


def _links(ce: dict[str, Any], at: str) -> list[str]:
    flow = [v for v in (_str(ce, "correlationid"), _str(ce, "causationid")) if v]
    # An event taking part in a correlated flow may be the cause of later ones, whose causationid
    # is this event's id: that id is a key too, so cause and effect share it.
    links = [f"request:{v}" for v in ([*flow, ce["id"].strip()] if flow else [])]
    m = re.fullmatch(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}", _str(ce, "traceparent").lower())
    if m and set(m.group(1)) != {"0"}:
        links.append(f"trace:{m.group(1)}")
    extra = ce.get("links")
    items = extra if isinstance(extra, list) else re.split(r"[\s,]+", extra) if isinstance(extra, str) else []
    for item in items:
        if not item:
            continue
        if not isinstance(item, str) or item.partition(":")[0] not in LINK_TYPES or not item.partition(":")[2]:
            raise DecodeError("invalid_value", f"links are typed keys ({', '.join(t + ':' for t in LINK_TYPES)})",
                              field=f"{at}.links", value=item)
        links.append(item)
    return links


def _actor(ce: dict[str, Any]) -> dict[str, Any]:
    authtype, authid = _str(ce, "authtype").lower(), _str(ce, "authid")
    if authtype == "system" and not authid:
        authid = "system"  # the platform itself acted (a TTL expiry, a scheduled job)
    if not authid or authtype in ("", "unauthenticated", "unknown"):
        return {"id": "unknown", "kind": "unknown", "assurance": "none", "principal": authid}
    kind = "human" if authtype in _HUMAN else "service" if authtype in _SERVICE else "unknown"
    return {"id": authid, "kind": kind, "assurance": "claimed", "principal": authid, "display": ""}


def _outcome(ce: dict[str, Any], last: str) -> str:
    given = _str(ce, "outcome").lower()
    if given in ("success", "failure", "unknown"):
        return given
    word = last.replace("_", "").replace("-", "")
    return "success" if word in _SUCCESS else "failure" if word in _FAILURE else "unknown"


def to_event(ce: Any, *, scope: str, received_at: datetime, at: str = "$") -> Event:
    """One CloudEvent (structured JSON form) -> one envelope; DecodeError names the bad field."""
    ce = _check(ce, at)
    source, subject = ce["source"].strip(), _str(ce, "subject") or None
    typ = _type(ce["type"])
    data = ce.get("data")
    diff = None
    if isinstance(data, dict) and "before" in data and "after" in data:
        diff = structured_diff(data["before"], data["after"])
    fields: dict[str, Any] = {
        "id": event_id("cloudevents", source, ce["id"]),
        "source": source,
        "type": typ,
        "time": parse_time(ce.get("time")) or received_at,
        "scope": scope,
        "subject": subject,
        "actor": _actor(ce),
        "target": {"kind": _str(ce, "targetkind") or "resource",
                   "id": _str(ce, "targetid") or subject or source,
                   "name": _str(ce, "targetname"), "environment": _str(ce, "environment"),
                   "service": _str(ce, "service")},
        "action": _str(ce, "action") or typ.rsplit(".", 1)[-1],
        "outcome": _outcome(ce, typ.rsplit(".", 1)[-1]),
        "links": _links(ce, at),
        "raw": redact(ce),
    }
    if diff is not None:
        fields["diff"] = diff
    if ce.get("sequence") is not None:
        fields["source_seq"] = str(ce["sequence"])
    if subject is None:
        del fields["subject"]
    try:
        return build(fields)
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"event {at} maps to an invalid envelope: {exc.detail}", field=exc.field,
                          value=exc.value) from None


def to_events(events: list[Any], *, scope: str, received_at: datetime, batch: bool) -> list[Event]:
    """Every event of a request, or a DecodeError for the first invalid one (nothing partial)."""
    return [to_event(ce, scope=scope, received_at=received_at, at=f"$[{i}]" if batch else "$")
            for i, ce in enumerate(events)]
