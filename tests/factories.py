"""Test data builders shared by unit, integration and benchmark code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.model import decode_dict, encode, event_id

BASE = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def event_dict(i: int, *, scope: str = "acme", pad: int = 0, source: str = "test") -> dict:
    """A valid envelope dict, distinct per ``i``; ``pad`` grows ``raw`` to reach a target size."""
    d = {
        "specversion": "1.0",
        "id": event_id(source, i),
        "source": f"causelog://{source}",
        "type": "config.changed",
        "time": (BASE + timedelta(milliseconds=i)).isoformat(),
        "scope": scope,
        "actor": {"id": f"user{i % 17}@acme.io", "kind": "human", "assurance": "claimed"},
        "target": {"kind": "service", "id": f"svc-{i % 13}", "environment": "prod"},
        "action": "update",
        "outcome": "success",
        "links": [f"commit:{i:040x}", f"session:test:{i // 10}"],
        "source_seq": i,
    }
    if pad:
        d["raw"] = {"note": "x" * pad}
    return d


def event_bytes(i: int, **kw: object) -> bytes:
    """Canonical bytes of :func:`event_dict`."""
    return encode(decode_dict(event_dict(i, **kw)))  # type: ignore[arg-type]


def malformed_records(n: int, max_bytes: int) -> list[tuple[str, bytes]]:
    """``n`` bad records cycling through every rejection reason: (expected reason, bytes)."""
    good = event_dict(10**9)
    kinds: list[tuple[str, bytes]] = []
    for k in range(n):
        case = k % 5
        if case == 0:
            kinds.append(("bad_json", b'{"specversion": "1.0", "id": ' + str(k).encode()))
        elif case == 1:
            d = dict(good, id=f"missing-{k}")
            del d["actor"]
            kinds.append(("missing_field", encode_raw(d)))
        elif case == 2:
            kinds.append(("wrong_type", encode_raw(dict(good, id=f"wrong-{k}", links=f"commit:{k}"))))
        elif case == 3:
            kinds.append(("invalid_value", encode_raw(dict(good, id=f"invalid-{k}", outcome="exploded"))))
        else:
            d = dict(good, id=f"big-{k}", raw={"blob": "y" * (max_bytes + 10)})
            kinds.append(("oversized", encode_raw(d)))
    return kinds


def encode_raw(d: dict) -> bytes:
    """JSON bytes without validation (for malformed records)."""
    import orjson

    return orjson.dumps(d)


def chain_workload(n: int, *, seed: int = 7, scopes: tuple[str, ...] = ("acme", "globex", "initech"),
                   jitter_s: int = 900, span_h: float = 6.0) -> list[dict]:
    """About ``n`` envelopes shaped like real change streams, in a shuffled arrival order.

    Per scope: commits reviewed and merged through pull requests (``commit:``, ``change:``), CI
    runs on the commit, deploys of one or two commits (merging their chains) with their statuses
    (``deploy:``), database sessions with 2-30 statements (``session:``) some of which carry the
    ``trace:`` of an API request, and events with no links. Times spread over ``span_h`` hours;
    arrival order is time order disturbed by up to ``jitter_s`` seconds, so late events land
    between earlier ones and chains merge out of order. Keys stay under 64 events each (the
    reducer's default memory per key), so its edges equal the offline reference exactly.
    """
    import random

    rng = random.Random(seed)
    out: list[tuple[float, dict]] = []
    span = span_h * 3600
    count = 0

    def add(scope: str, kind: str, t: float, links: list[str], actor: str, target: str, action: str,
            outcome: str = "success") -> None:
        nonlocal count
        count += 1
        d = {
            "specversion": "1.0",
            "id": event_id("workload", scope, count, seed),
            "source": "causelog://workload",
            "type": kind,
            "time": (BASE + timedelta(seconds=t)).isoformat(),
            "scope": scope,
            "actor": {"id": actor, "kind": "human", "assurance": "claimed"},
            "target": {"kind": "service", "id": target, "environment": "prod"},
            "action": action,
            "outcome": outcome,
            "links": links,
            "source_seq": count,
        }
        out.append((t + rng.uniform(0, jitter_s), d))

    while count < n:
        scope = rng.choice(scopes)
        t0 = rng.uniform(0, span)
        r = rng.random()
        who = f"dev{rng.randrange(40)}@{scope}.io"
        if r < 0.35:  # commit -> PR review -> merge -> CI -> deploy (sometimes two commits)
            shas = [f"{rng.getrandbits(160):040x}" for _ in range(rng.choice((1, 1, 2)))]
            pr = f"change:{scope}/api#{rng.randrange(10**6)}"
            dep = f"deploy:{scope}-{rng.getrandbits(48):012x}"
            for k, sha in enumerate(shas):
                add(scope, "git.commit", t0 + k, [f"commit:{sha}"], who, f"{scope}/api", "commit")
                add(scope, "ci.completed", t0 + 300 + k, [f"commit:{sha}"], "ci-bot", f"{scope}/api", "run",
                    rng.choice(("success", "success", "failure")))
            add(scope, "change.reviewed", t0 + 600, [pr], f"lead{rng.randrange(5)}@{scope}.io", f"{scope}/api",
                "approve")
            add(scope, "change.merged", t0 + 900, [pr, *(f"commit:{s}" for s in shas)], who, f"{scope}/api", "merge")
            add(scope, "deploy.started", t0 + 1200, [dep, *(f"commit:{s}" for s in shas)], "deployer",
                f"{scope}-api", "deploy")
            add(scope, "deploy.succeeded", t0 + 1500, [dep], "deployer", f"{scope}-api", "deploy")
        elif r < 0.75:  # a database session with statements, some inside traced requests
            sid = f"session:postgres:pg1:{rng.getrandbits(40):010x}"
            add(scope, "db.session.started", t0, [sid], who, "db-main", "connect")
            for q in range(rng.randrange(2, 30)):
                links = [sid]
                if rng.random() < 0.2:
                    trace = f"trace:{rng.getrandbits(128):032x}"
                    links.append(trace)
                    add(scope, "api.request", t0 + q * 7 + 1, [trace], "svc-api", f"{scope}-api", "call")
                add(scope, "db.query", t0 + q * 7 + 2, links, who, "db-main", "select")
        else:  # config edits nobody linked to anything
            add(scope, "config.changed", t0, [], who, f"{scope}-api", "update")
    out.sort(key=lambda x: x[0])
    return [d for _, d in out]
