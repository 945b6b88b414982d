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
