"""Fuzz targets: every entry point that takes outside bytes (issue 14).

A target is a hypothesis strategy of inputs and a call. A **crash** is any exception other than
the documented ones (the :class:`~pipeline.errors.CauselogError` family: ``DecodeError`` for bad
input, ``ConfigError`` for bad user input, ``SourceError``), or for the receivers an answer of
500. Structured inputs are built from the string literals of the module under test (field
names, enum values), so generated records reach deep into the normalisers instead of being
refused at the first ``require_dict``.
"""

from __future__ import annotations

import ast
import inspect
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from hypothesis import strategies as st

from pipeline.errors import CauselogError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "sources"))

NOW = datetime(2026, 11, 27, 2, 14, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``call`` gets one drawn input; ``allowed`` exceptions are not crashes."""

    name: str
    inputs: st.SearchStrategy[Any]
    call: Callable[[Any], object]
    allowed: tuple[type[BaseException], ...] = (CauselogError,)


def literals(module: ModuleType) -> list[str]:
    """The short string constants of ``module``: its field names and enum values."""
    tree = ast.parse(inspect.getsource(module))
    found = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return sorted(s for s in found if 0 < len(s) <= 40 and "\n" not in s)


_ODD_STRINGS = ["2026-11-27T02:14:00Z", "2024-06-01T12:00:00.000000Z", "", " ", "0" * 40, "1717243200", "9" * 30,
                "\x00", "ü\u202e", "null", "-1", "1e999", "NaN", "a" * 300, "arn:aws:iam::123:root",
                "refs/heads/main", "system:serviceaccount:kube-system:x", "2026-13-45T99:99:99Z"]
_CHARS = "abcXYZ019 _-:/.@{}[]\"'\\\n\t\x00é中😀\u202e"


class Maker:
    """Builds JSON-like values from a ``random.Random`` hypothesis hands over: one draw per input
    instead of hundreds, so 100,000 inputs per target take seconds, not hours. Keys and strings
    mostly come from ``pool`` (the literals of the module under test)."""

    def __init__(self, pool: list[str], rnd: random.Random) -> None:
        self.pool = pool or ["x"]
        self.rnd = rnd

    def text(self) -> str:
        r = self.rnd.random()
        if r < 0.6:
            return self.rnd.choice(self.pool)
        if r < 0.8:
            return self.rnd.choice(_ODD_STRINGS)
        return "".join(self.rnd.choice(_CHARS) for _ in range(self.rnd.randrange(12)))

    def scalar(self) -> Any:
        r = self.rnd.randrange(10)
        if r == 0:
            return None
        if r == 1:
            return self.rnd.random() < 0.5
        if r == 2:
            return self.rnd.choice([0, -1, 1, 2**31, 2**63 - 1, 2**64, -(2**70), 1717243200, 1717243200000])
        if r == 3:
            return self.rnd.choice([0.0, -0.0, 1.5, 1e308, -1e-300, 1717243200.5])
        return self.text()

    def value(self, depth: int = 0) -> Any:
        r = self.rnd.random()
        if depth > 6 or r < 0.55:
            return self.scalar()
        if r < 0.7:
            return [self.value(depth + 1) for _ in range(self.rnd.randrange(4))]
        return self.record(depth + 1, self.rnd.randrange(6))

    def record(self, depth: int = 0, size: int | None = None) -> dict[str, Any]:
        n = self.rnd.randrange(16) if size is None else size
        return {self.text(): self.value(depth) for _ in range(n)}

    def json_bytes(self, value: Any) -> bytes:
        """``value`` encoded, sometimes damaged (bytes flipped, cut, inserted)."""
        data = msgspec.json.encode(value)  # orjson stops at 64-bit integers
        r = self.rnd.random()
        if r < 0.6 or not data:
            return data
        at = self.rnd.randrange(len(data))
        if r < 0.8:
            return data[:at] + bytes([self.rnd.randrange(256)]) + data[at + 1:]
        if r < 0.9:
            return data[:at]
        return data[:at] + self.rnd.choice([b"[" * 100, b"{", b'"', b"\\u0000", b"\xff", b"NaN"]) + data[at:]

    def lines(self) -> str:
        out = []
        for _ in range(self.rnd.randrange(8)):
            r = self.rnd.random()
            if r < 0.3:
                out.append(msgspec.json.encode(self.record(2)).decode())
            elif r < 0.6:
                out.append(",".join(self.text() for _ in range(self.rnd.randrange(8))))
            else:
                out.append(" ".join(self.text() for _ in range(self.rnd.randrange(6))))
        return "\n".join(out)


def made(pool: list[str], build: Callable[[Maker], Any]) -> st.SearchStrategy[Any]:
    """Inputs built by ``build`` from a hypothesis-drawn random generator."""
    return st.integers(0, 2**64).map(lambda seed: build(Maker(pool, random.Random(seed))))


def records(pool: list[str]) -> st.SearchStrategy[Any]:
    """Objects with many known keys (what a source's ``to_events`` takes), sometimes not objects."""
    return made(pool, lambda m: m.record() if m.rnd.random() < 0.9 else m.value())


def json_bytes(pool: list[str], build: Callable[[Maker], Any] | None = None) -> st.SearchStrategy[bytes]:
    """Encoded (sometimes damaged) values, or arbitrary bytes."""
    return st.one_of(made(pool, lambda m: m.json_bytes(build(m) if build else m.value())), st.binary(max_size=200))


def lines(pool: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(made(pool, Maker.lines), st.text(max_size=200))


# -- the targets -------------------------------------------------------------------------------


def _codec_targets() -> list[Target]:
    from factories import event_dict

    from pipeline.model import codec

    pool = literals(codec) + ["specversion", "id", "source", "type", "time", "scope", "actor", "target", "action",
                              "outcome", "links", "raw", "diff", "kind", "human", "service", "1.0"]
    envelopes = st.one_of(
        json_bytes(pool),
        json_bytes(pool, lambda m: {**event_dict(m.rnd.randrange(10**6)), m.text(): m.value()}),
        st.integers(1, 20_000).map(lambda d: b'{"raw":' + b"[" * d + b"]" * d + b"}"),
    )

    def both(data: bytes) -> None:
        # decode_wire must accept and refuse exactly what decode does.
        outcomes = []
        for fn in (codec.decode, codec.decode_wire):
            try:
                fn(data, max_bytes=1 << 20)
                outcomes.append(None)
            except CauselogError as exc:
                outcomes.append(type(exc).__name__)
        if outcomes[0] != outcomes[1]:
            raise AssertionError(f"decode and decode_wire disagree: {outcomes}")

    return [Target("codec.decode", envelopes, lambda b: codec.decode(b, max_bytes=1 << 20)),
            Target("codec.decode_wire==decode", envelopes, both)]


def _source_targets() -> list[Target]:
    from pipeline.sources import (
        cloudtrail,
        config_files,
        debezium,
        git,
        github,
        github_audit,
        k8s_audit,
        okta,
        pgsql,
        postgres_log,
        terraform,
    )

    out: list[Target] = []

    def add(name: str, module: ModuleType, call: Callable[[Any], object], kind: str = "record") -> None:
        pool = literals(module)
        inputs = {"record": records(pool), "text": lines(pool), "bytes": json_bytes(pool)}[kind]
        out.append(Target(name, inputs, call))

    add("cloudtrail.to_events", cloudtrail, lambda r: cloudtrail.to_events(r, scope="acme"))
    add("cloudtrail.iter_records", cloudtrail, cloudtrail.iter_records)
    add("cloudtrail.records_from_csv", cloudtrail, cloudtrail.records_from_csv, "text")
    for fmt in ("json", "yaml", "toml", "env", "properties", "ini"):
        add(f"config_files.parse[{fmt}]", config_files, lambda b, fmt=fmt: config_files.parse(b, fmt), "bytes")
    add("debezium.to_events", debezium, lambda r: debezium.to_events(r, scope="acme", topic="db.public.t"))
    add("github.to_events", github, lambda r: github.to_events(
        r, event_name=str(r.get("action") or "push") if isinstance(r, dict) else "push", scope="acme",
        received_at=NOW))
    add("github_audit.parse_lines", github_audit, lambda t: list(github_audit.parse_lines(t, stats=Counter())),
        "text")
    add("github_audit.to_events", github_audit, lambda r: github_audit.to_events(r, scope="acme"))
    add("k8s_audit.split_records", k8s_audit, k8s_audit.split_records)
    add("k8s_audit.to_events", k8s_audit, lambda r: k8s_audit.to_events(r, scope="acme", cluster="prod"))
    add("okta.to_events", okta, lambda r: okta.to_events(r, scope="acme"))
    add("pgsql.analyze", pgsql, pgsql.analyze, "text")
    add("postgres_log.parse+to_events", postgres_log, lambda t: [
        postgres_log.to_events(rec, scope="acme", server="db1") for rec in postgres_log.parse(t)], "text")
    add("terraform.to_events", terraform, lambda r: terraform.to_events(r, scope="acme", plan_name="plan"))
    add("git.to_events", git, lambda r: git.to_events(r, scope="acme", repo="github.com/acme/shop"))
    add("git.parse_log", git, lambda b: list(git.parse_log(iter(b.split(b"\x00")))), "bytes")
    return out


def _receiver_targets() -> list[Target]:
    from test_receiver import Sinks, audit_event, gh_headers, github_receiver, k8s_receiver, push_payload

    from pipeline.sources import github, k8s_audit

    def answer(make: Callable[[Sinks], Any], headers: Callable[[bytes], dict[str, str]]) -> Callable[[bytes], None]:
        def call(body: bytes) -> None:
            resp = make(Sinks()).handle(body, headers(body))
            if resp.status >= 500:
                raise AssertionError(f"answered {resp.status}: {resp.body}")
        return call

    k8s_pool = literals(k8s_audit)
    k8s_bodies = json_bytes(k8s_pool, lambda m: {
        "kind": "EventList", "apiVersion": "audit.k8s.io/v1",
        "items": [{**audit_event("a1"), m.text(): m.value()} if m.rnd.random() < 0.5 else m.record()
                  for _ in range(m.rnd.randrange(4))]})
    gh_pool = literals(github)
    gh_bodies = json_bytes(gh_pool, lambda m: {**push_payload(), m.text(): m.value()} if m.rnd.random() < 0.7
                           else m.record())
    return [
        Target("receiver.k8s_audit", k8s_bodies, answer(k8s_receiver, lambda b: {"Content-Type": "application/json"})),
        Target("receiver.github", gh_bodies, answer(github_receiver, lambda b: gh_headers(b))),
    ]


def _push_targets() -> list[Target]:
    """The connector kit's entry points: CloudEvents bodies (structured and batch mode), the
    shipped webhook mappings, and user SQL as the API's checker reads it."""
    from pipeline.sources import cloudevents as ce
    from pipeline.sources import webhook_map
    from pipeline.store import usersql

    pool = literals(ce)

    def structured(body: bytes) -> None:
        events = ce.split("structured", {"content-type": ce.STRUCTURED}, body)
        ce.to_events(events, scope="acme", received_at=NOW, batch=False)

    def batch(body: bytes) -> None:
        events = ce.split("batch", {"content-type": ce.BATCH}, body)
        ce.to_events(events, scope="acme", received_at=NOW, batch=True)

    event = {"specversion": "1.0", "id": "e1", "source": "/bot", "type": "deploy.succeeded"}
    one = json_bytes(pool, lambda m: {**event, m.text(): m.value()} if m.rnd.random() < 0.6 else m.record())
    many = json_bytes(pool, lambda m: [{**event, "id": f"e{i}", m.text(): m.value()} if m.rnd.random() < 0.6
                                       else m.record() for i in range(m.rnd.randrange(4))])
    out = [Target("cloudevents.structured", one, structured), Target("cloudevents.batch", many, batch)]
    for name in ("argocd", "jenkins"):
        mapping = webhook_map.load_mapping(name)
        out.append(Target(f"webhook_map.to_events[{name}]", records(literals(webhook_map) + pool),
                          lambda r, m=mapping: webhook_map.to_events(m, r, scope="acme")))
    sql_pool = ["SELECT", "WITH", "SHOW", "EXPLAIN", "SET", "KILL", "USE", ";", "'", '"', "`", "--", "/*", "*/",
                "\\", "FROM", "events", "SETTINGS", "readonly", "=", "0", " ", "\n", "(", ")", "{t:String}"]
    sql = st.one_of(st.text(max_size=80), st.lists(st.sampled_from(sql_pool), max_size=12).map(" ".join))
    out.append(Target("usersql.check+normalize", sql, lambda q: (usersql.normalize(q), usersql.check(q))))
    return out


def _timeparse_targets() -> list[Target]:
    from pipeline.cli import timeparse

    pool = ["2026-11-27 02:14", "2026-11-27T02:14:00Z", "02:14", "6h", "30m", "2d", "1w", "90s", "now", "t", "z",
            "+01:00", "-", ":", "9" * 20, "1e308"]
    inputs = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(pool), max_size=4).map("".join))
    return [Target("timeparse.parse_time", inputs, lambda t: timeparse.parse_time(t, NOW)),
            Target("timeparse.parse_duration", inputs, timeparse.parse_duration)]


def all_targets() -> list[Target]:
    """Every fuzz target, by name."""
    return [*_codec_targets(), *_source_targets(), *_receiver_targets(), *_push_targets(), *_timeparse_targets()]
