"""Declarative webhook mappings: any JSON webhook -> change events, no code (pure part).

A mapping (YAML) names, for each envelope field, a JMESPath expression evaluated against the
webhook's JSON body (https://jmespath.org; literals are ``'text'`` or a backtick JSON value)::

    name: argocd                        # kind: DLQ origins, the default `source`
    source: "join('', ['argocd://', app])"      # optional (default: name)
    id: [app, finishedAt, phase]        # required: the delivery's own identity -> deterministic id
    time: finishedAt                    # required: RFC 3339 or epoch seconds/milliseconds
    type: "join('.', ['deploy', phase])"        # required; lower-cased, segments cleaned
    action: "'sync'"                    # optional (default: the type's last segment)
    outcome: phase                      # optional; read with outcome_values, then by word
    outcome_values: {Succeeded: success, Failed: failure}
    actor: {id: initiatedBy, kind: "'human'", assurance: "'claimed'", display: ...}
    target: {kind: "'argocd.application'", id: app, name: ..., environment: ..., service: ...}
    links: {commit: revision, deploy: "join(':', ['argocd', app, revision])"}   # value or list
    diff: {before: old, after: new}     # optional: structured diff, secrets hashed
    subject: ...                        # optional
    source_seq: ...                     # optional

Extra functions: ``lower(s)``, ``upper(s)``, ``trace_id(traceparent)``. Every expression is
compiled when the mapping loads (a bad one is a ConfigError naming the field); a body whose
required values are missing or malformed raises DecodeError naming the field and expression,
so the delivery goes to the DLQ with that reason. ``raw`` is the body, secrets redacted.
``outcome``: a value found in ``outcome_values`` wins; else ``success``/``succeeded``/``ok``...
mean success, ``failure``/``failed``/``error``/``aborted``/``unstable``... failure, anything
else (or nothing) unknown. Shipped mappings: ``pipeline/sources/mappings/*.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
import yaml

from pipeline.errors import ConfigError, DecodeError, yaml_problem
from pipeline.model import LINK_TYPES, Event, event_id
from pipeline.sources._normalize import build, parse_time, slug
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact

__all__ = ["MAPPINGS_DIR", "Mapping", "load_mapping", "parse_mapping", "to_events"]

MAPPINGS_DIR = Path(__file__).with_name("mappings")

_TOP = {"name", "source", "id", "time", "type", "action", "outcome", "outcome_values", "actor", "target",
        "links", "diff", "subject", "source_seq"}
_ACTOR = {"id", "kind", "assurance", "display", "principal"}
_TARGET = {"kind", "id", "name", "environment", "service"}
_DIFF = {"before", "after"}
_SUCCESS = {"success", "succeeded", "successful", "ok", "passed", "completed", "complete", "healthy", "synced",
            "applied", "deployed", "done"}
_FAILURE = {"failure", "failed", "fail", "error", "errored", "aborted", "unstable", "degraded", "cancelled",
            "canceled", "timedout", "rejected"}
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class _Functions(jmespath.functions.Functions):
    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_lower(self, s: str | None) -> str | None:
        return None if s is None else s.lower()

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_upper(self, s: str | None) -> str | None:
        return None if s is None else s.upper()

    @jmespath.functions.signature({"types": ["string", "null"]})
    def _func_trace_id(self, s: str | None) -> str | None:
        m = _TRACEPARENT.fullmatch(s.strip().lower()) if s else None
        return m.group(1) if m else None


_OPTIONS = jmespath.Options(custom_functions=_Functions())


@dataclass(frozen=True)
class _Expr:
    field: str
    text: str
    compiled: Any

    def __call__(self, body: Any) -> Any:
        try:
            return self.compiled.search(body, options=_OPTIONS)
        except jmespath.exceptions.JMESPathError as exc:  # a function given the wrong type, say
            raise DecodeError("invalid_value", f"expression {self.text!r} failed on this body: {exc}",
                              field=self.field) from None


@dataclass(frozen=True)
class Mapping:
    """A compiled mapping: see the module docstring for the fields."""

    name: str
    id: tuple[_Expr, ...]
    time: _Expr
    type: _Expr
    target: dict[str, _Expr]
    source: _Expr | None = None
    action: _Expr | None = None
    outcome: _Expr | None = None
    outcome_values: dict[str, str] = field(default_factory=dict)
    actor: dict[str, _Expr] = field(default_factory=dict)
    links: dict[str, _Expr] = field(default_factory=dict)
    diff: dict[str, _Expr] = field(default_factory=dict)
    subject: _Expr | None = None
    source_seq: _Expr | None = None


def _compile(where: str, text: Any) -> _Expr:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"mapping field {where}: expected a JMESPath expression (a string), got {text!r}")
    try:
        return _Expr(where, text, jmespath.compile(text))
    except jmespath.exceptions.JMESPathError as exc:
        raise ConfigError(f"mapping field {where}: {text!r} is not a JMESPath expression: {exc}") from None


def _section(doc: dict[str, Any], name: str, allowed: set[str], required: tuple[str, ...] = ()) -> dict[str, _Expr]:
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"mapping field {name}: expected a map of {', '.join(sorted(allowed))}")
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"mapping field {name}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                          f"(known: {', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in section]
    if missing:
        raise ConfigError(f"mapping field {name}: {', '.join(missing)} required")
    return {k: _compile(f"{name}.{k}", v) for k, v in section.items()}


def parse_mapping(doc: Any, where: str = "mapping") -> Mapping:
    """Compile a mapping document (ConfigError naming the bad field)."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a YAML map with name, id, time, type, target...")
    unknown = set(doc) - _TOP
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    missing = [k for k in ("name", "id", "time", "type", "target") if k not in doc]
    if missing:
        raise ConfigError(f"{where}: required field(s) {', '.join(missing)} missing")
    name = doc["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        raise ConfigError(f"{where}: name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    ids = doc["id"] if isinstance(doc["id"], list) else [doc["id"]]
    values = doc.get("outcome_values") or {}
    if not isinstance(values, dict) or any(v not in ("success", "failure", "unknown") for v in values.values()):
        raise ConfigError(f"{where}: outcome_values maps values to success, failure or unknown")
    links = doc.get("links") or {}
    if isinstance(links, dict) and set(links) - set(LINK_TYPES):
        raise ConfigError(f"{where}: links keys are link types ({', '.join(LINK_TYPES)}), "
                          f"got {', '.join(sorted(set(links) - set(LINK_TYPES)))}")

    def opt(key: str) -> _Expr | None:
        return _compile(key, doc[key]) if doc.get(key) is not None else None

    return Mapping(
        name=name, id=tuple(_compile(f"id[{i}]", e) for i, e in enumerate(ids)), time=_compile("time", doc["time"]),
        type=_compile("type", doc["type"]), target=_section(doc, "target", _TARGET, ("kind", "id")),
        source=opt("source"), action=opt("action"), outcome=opt("outcome"),
        outcome_values={str(k): v for k, v in values.items()}, actor=_section(doc, "actor", _ACTOR),
        links=_section(doc, "links", set(LINK_TYPES)), diff=_section(doc, "diff", _DIFF, ("before", "after"))
        if doc.get("diff") else {}, subject=opt("subject"), source_seq=opt("source_seq"),
    )


def load_mapping(spec: str | Path) -> Mapping:
    """A mapping file, or the name of a shipped one (``argocd``, ``jenkins``)."""
    path = Path(spec)
    if not path.exists() and re.fullmatch(r"[a-z0-9_-]+", str(spec)) and (MAPPINGS_DIR / f"{spec}.yaml").exists():
        path = MAPPINGS_DIR / f"{spec}.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        shipped = ", ".join(sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml")))
        raise ConfigError(f"cannot read mapping {spec}: {exc.strerror} (shipped mappings: {shipped})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"mapping {path} is not YAML: {yaml_problem(exc)}") from None
    return parse_mapping(doc, str(path))


def _text(expr: _Expr, body: Any, *, required: bool) -> str | None:
    value = expr(body)
    if value is None or value == "":
        if required:
            raise DecodeError("missing_field", f"expression {expr.text!r} found nothing in this body",
                              field=expr.field)
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DecodeError("wrong_type", f"expression {expr.text!r} gave a {type(value).__name__}, "
                                        "expected a string or number", field=expr.field, value=value)
    return str(value)


def _type(text: str) -> str:
    segments = [slug(s, default="_") for s in text.split(".") if s.strip()]
    if not segments[0][0].isalpha():
        segments.insert(0, "webhook")
    return ".".join(segments if len(segments) > 1 else ["webhook", *segments])


def _outcome(m: Mapping, body: Any) -> str:
    value = _text(m.outcome, body, required=False) if m.outcome else None
    if value is None:
        return "unknown"
    if value in m.outcome_values:
        return m.outcome_values[value]
    word = value.strip().lower().replace("_", "").replace("-", "")
    return "success" if word in _SUCCESS else "failure" if word in _FAILURE else "unknown"


def _links(m: Mapping, body: Any) -> list[str]:
    out: list[str] = []
    for kind, expr in m.links.items():
        value = expr(body)
        for item in value if isinstance(value, list) else [value]:
            if item is None or item == "":
                continue
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise DecodeError("wrong_type", f"link expression {expr.text!r} gave a {type(item).__name__}",
                                  field=expr.field, value=item)
            text = str(item).strip()
            if kind == "trace":
                tp = _TRACEPARENT.fullmatch(text.lower())
                text = tp.group(1) if tp else text.lower()
            if kind == "commit":
                text = text.lower()
            if not text or any(c.isspace() for c in text):
                raise DecodeError("invalid_value", "a link key holds no whitespace", field=expr.field, value=text)
            out.append(f"{kind}:{text}")
    return out


def _actor(m: Mapping, body: Any) -> dict[str, Any]:
    who = _text(m.actor["id"], body, required=False) if "id" in m.actor else None
    if who is None:
        return {"id": "unknown", "kind": "unknown", "assurance": "none"}
    out: dict[str, Any] = {"id": who, "kind": "unknown", "assurance": "claimed", "principal": who}
    for key in ("kind", "assurance", "display", "principal"):
        if key in m.actor:
            value = _text(m.actor[key], body, required=False)
            if value is not None:
                out[key] = value.lower() if key in ("kind", "assurance") else value
    out["verified"] = out["assurance"] in ("authenticated", "mfa", "signed")
    return out


def to_events(m: Mapping, body: Any, *, scope: str) -> list[Event]:
    """The envelope of one webhook body (a list with one event), or a DecodeError naming the field."""
    ids = [_text(e, body, required=True) for e in m.id]
    when = m.time(body)
    time = parse_time(when)
    if time is None or not 1970 <= time.year < 2200:
        raise DecodeError("missing_field" if when is None else "invalid_value",
                          f"expression {m.time.text!r} gave no time (RFC 3339 or epoch seconds/milliseconds)",
                          field="time", value=when)
    typ = _type(_text(m.type, body, required=True) or "")
    source = (_text(m.source, body, required=True) if m.source else None) or m.name
    target = {k: _text(e, body, required=k in ("kind", "id")) or "" for k, e in m.target.items()}
    fields: dict[str, Any] = {
        "id": event_id(f"webhook:{m.name}", *[i or "" for i in ids]),
        "source": source, "type": typ, "time": time, "scope": scope, "actor": _actor(m, body), "target": target,
        "action": (_text(m.action, body, required=False) if m.action else None) or typ.rsplit(".", 1)[-1],
        "outcome": _outcome(m, body), "links": _links(m, body), "raw": redact(body),
    }
    if m.diff:
        fields["diff"] = structured_diff(m.diff["before"](body), m.diff["after"](body))
    for name in ("subject", "source_seq"):
        expr = getattr(m, name)
        value = _text(expr, body, required=False) if expr is not None else None
        if value is not None:
            fields[name] = value
    return [build(fields)]
