"""Event builders for the incident answers (issue 13), shared by unit, integration and bench code:
the 02:14-style outage on a database named by a kind-qualified id, and frida's role chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.identity import IdentityConfig, IdentityMap
from pipeline.model import decode
from pipeline.store import EventWriter, Pending, Position, Store

AT = datetime(2026, 11, 27, 2, 14, tzinfo=UTC)
DB = {"kind": "database", "id": "database/payments-db", "name": "payments-db", "service": "payments"}
TRAIL = {"kind": "cloudtrail.trail",
         "id": "arn:aws:cloudtrail:us-east-1:111122223333:trail/stratus-red-team-ct-stop-trail-buykxbqejv"}


def env(n: int, minutes_before: float, type_: str, target: dict[str, str], *, actor: str = "app",
        assurance: str = "authenticated", outcome: str = "success", action: str = "update",
        links: tuple[str, ...] = (), statement: str | None = None, diff: Any = None,
        principal: str = "") -> dict[str, Any]:
    d: dict[str, Any] = {
        "specversion": "1.0", "id": f"ev-{n:04d}", "source": "causelog://test", "type": type_,
        "time": (AT - timedelta(minutes=minutes_before)).isoformat(), "scope": "acme",
        "actor": {"id": actor, "kind": "human", "assurance": assurance, **({"principal": principal} if principal else {})},
        "target": {"environment": "prod", **target}, "action": action, "outcome": outcome, "links": list(links),
    }
    if statement is not None:
        d["raw"] = {"statement": {"normalized": statement}}
    if diff is not None:
        d["diff"] = diff
    return d


def write(store: Store, envelopes: list[dict[str, Any]]) -> None:
    batch = [Pending(decode(orjson.dumps(d)), orjson.dumps(d), Position("t", 0, n)) for n, d in enumerate(envelopes)]
    EventWriter(store).write(batch, now=AT)


def outage() -> list[dict[str, Any]]:
    """20 routine queries, the max_connections cut, a deploy of a client, and the failure at T."""
    evs = [env(i, 50 - i * 2, "db.query", DB, action="SELECT", statement="SELECT * FROM orders WHERE id = $1",
               links=(f"session:postgres:db:s{i % 3}",)) for i in range(15)]
    evs += [env(20 + i, 40 - i, "db.query", DB, action="SELECT", actor="reporting",
                statement="SELECT count(*) FROM payments") for i in range(5)]
    evs.append(env(100, 45, "config.changed", DB, actor="bob", action="update",
                   diff={"changed": ["max_connections"], "before": {"max_connections": 200},
                         "after": {"max_connections": 20}}))
    evs.append(env(101, 30, "deploy.created", {"kind": "service", "id": "payments-api"}, actor="carol"))
    evs.append(env(102, 0, "db.failed", DB, actor="postgres", outcome="failure", action="connect"))
    return evs


def frida_chain() -> list[dict[str, Any]]:
    """frida (IAM user, MFA) assumes ops; as ops/frida assumes prod-admin (ops-session); deletes a bucket."""
    iam = {"kind": "iam.role", "id": "arn:aws:iam::111122223333:role/ops"}
    prod = {"kind": "iam.role", "id": "arn:aws:iam::111122223333:role/prod-admin"}
    bucket = {"kind": "s3.bucket", "id": "arn:aws:s3:::payments-exports"}
    issued = lambda key: {"session_issued": {"session": key}}  # noqa: E731
    return [
        env(1, 19, "iam.role.assumed", iam, actor="arn:aws:iam::111122223333:user/frida", assurance="mfa",
            action="AssumeRole", links=("session:aws:ASIAOPS1",), diff=issued("session:aws:ASIAOPS1")),
        env(2, 15, "iam.role.assumed", prod, actor="ops/frida", action="AssumeRole",
            links=("session:aws:ASIAOPS1", "session:aws:ASIAPROD2"), diff=issued("session:aws:ASIAPROD2")),
        env(3, 10, "aws.s3.delete_bucket", bucket, actor="prod-admin/ops-session", action="DeleteBucket",
            links=("session:aws:ASIAPROD2",)),
    ]


FRIDA = IdentityMap.build(IdentityConfig.from_obj(
    {"people": {"frida": {"name": "Frida Holm", "principals": ["arn:aws:iam::111122223333:user/frida"]}}}))


def busy_database(n: int, at: datetime, *, seed: int = 7, scope: str = "acme") -> list[dict[str, Any]]:
    """About ``n`` events on ``database/payments-db`` in the 6 hours before ``at``, as pgaudit makes
    them: 90 % reads (40 normalised statements, 20 application roles, sessions of ~50 statements),
    writes, session starts, role assumptions and a grant, plus the 02:14 scenario's changes:
    max_connections cut 200 -> 20 at T-40m, a deploy of payments-api at T-25m, the failure at T."""
    import random

    rng = random.Random(seed)
    reads = [f"SELECT * FROM t{i} WHERE id = $1" for i in range(40)]
    writes = [f"INSERT INTO t{i} VALUES ($1, $2)" for i in range(10)] + ["UPDATE t1 SET a = $1 WHERE id = $2"]
    out: list[dict[str, Any]] = []

    def add(type_: str, minutes_before: float, **kw: Any) -> None:
        d = env(0, minutes_before, type_, kw.pop("target", DB), **kw)
        d["id"] = f"busy-{seed}-{len(out):07d}"
        d["time"] = (at - timedelta(minutes=minutes_before)).isoformat()
        d["scope"] = scope
        out.append(d)

    session = 0
    while len(out) < n - 3:
        session += 1
        role = f"postgres:payments:app{rng.randrange(20)}"
        key = f"session:postgres:payments:{seed}.{session}"
        start = rng.uniform(1, 359)
        add("db.session.started", start, actor=role, action="connect", links=(key,))
        for k in range(min(50, n - 3 - len(out))):
            when = max(0.01, start - k * 0.05)
            r = rng.random()
            if r < 0.93:
                add("db.query", when, actor=role, action="SELECT", statement=rng.choice(reads), links=(key,))
            elif r < 0.995:
                add("db.write", when, actor=role, action="INSERT", statement=rng.choice(writes), links=(key,))
            else:
                add("iam.role.assumed", when, actor="arn:aws:iam::111122223333:user/ci", action="AssumeRole",
                    target={"kind": "iam.role", "id": "arn:aws:iam::111122223333:role/payments-db-reader",
                            "service": "payments-db"})
    add("config.changed", 40, actor="git:bob@acme.example", assurance="claimed",
        diff={"changed": ["max_connections"], "before": {"max_connections": 200}, "after": {"max_connections": 20}})
    add("deploy.created", 25, actor="github:bob", target={"kind": "service", "id": "payments-api"},
        links=("deploy:8120347",))
    add("db.failed", 0, actor="postgres:payments:postgres", outcome="failure", action="connect")
    return out
