#!/usr/bin/env python
"""Correlation throughput through the reducer alone: ``step()`` on prebuilt events, one core.

Synthetic events (built before the clock starts) with a realistic key mix:

* DB sessions (``session:postgres:*``, ~20 events each, 64 open at a time), 5 % with a trace;
* app traces (``trace:*``, ~10 events each), half with a request id (~3 events each);
* IAM sessions (``session:aws:*``, ~20 events each), some with a request id;
* git/CI/deploy (``commit:*`` ~5 events each, plus ``change:*`` and ``deploy:*`` keys);
* 5 % without links. 1-3 links per event otherwise.

Event time spans ``--span-hours`` (default 36 h, so 12 h sessions and 24 h traces do expire) and
``now`` is the watermark (latest event time seen), as the worker would pass it. ``--late``
(default 2 %) of the events arrive up to 50 positions late (out of order).

Reported: events/s through ``step()`` (GC on, as in production), peak and final live keys,
in-memory state bytes per live key at the end (``state_bytes_per_key``: deep ``sys.getsizeof``
of the state, every object counted once, divided by the live keys), encoded state bytes per key,
and a correctness check of membership against the offline ``components()`` on a prefix without
expiry. Targets: >= 50,000 events/s (DESIGN.md §8), <= 300 state bytes per live key (issue 12).
Benchmarks inform, they do not fail: the exit code is 0 either way.

Two more sections (skip them with ``--wire 0`` and ``--worker ''``):

* **worker CPU path** (``--wire N``, default 200,000): ``tests/factories.chain_workload`` envelopes
  (12 scopes, 4 partitions keyed by scope) encoded to bytes before the clock starts, then timed
  in 20,000-record batches through ``BatchHandler.prepare`` -- the worker's own first stage:
  ``decode_wire`` of each record and ``PartitionCorrelator.correlate`` (per-partition reducers).
  Reported four ways: decode only (``prepare`` without correlation), correlate only
  (``correlate_batch`` on the decoded events), both (``prepare`` with correlation), and both plus
  the state changelog records taken after every batch (``Correlation.collect``, as if each batch
  were a checkpoint). GC is on with default thresholds, as in the worker.
* **through the worker** (``--worker MODES``, default ``agent``): ``tests/bench/bench_e2e.py
  --skip-baseline`` with ``CAUSELOG_INGEST=<mode>`` for each mode (``batch``, ``agent``), on
  ``--worker-events`` records (default 50,000), correlation on (the worker always correlates):
  first produce -> all rows stored, including Kafka, the store write and snapshots. ``make bench``
  runs the batch mode through ``bench_e2e.py`` itself (with its raw baseline), so it asks only
  for ``agent`` here.

    .venv/bin/python tests/bench/bench_correlate.py
    .venv/bin/python tests/bench/bench_correlate.py --events 1000000 --max-per-key 8 --json
    .venv/bin/python tests/bench/bench_correlate.py --worker batch,agent --worker-events 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pipeline.correlate import (  # noqa: E402
    ChainView,
    CorrelationConfig,
    State,
    components,
    encode_state,
    step,
)
from pipeline.model import LINK_TYPES, Actor, Event, Target  # noqa: E402

TARGET_EPS = 50_000
TARGET_STATE_BYTES = 300
BASE = datetime(2026, 11, 27, tzinfo=UTC)
ACTOR = Actor(id="svc@acme.io", kind="service", assurance="authenticated")
TARGET = Target(kind="service", id="api")


class Pool:
    """``width`` keys open at a time; each lives for about ``mean`` events, then a new one opens."""

    def __init__(self, rng: random.Random, prefix: str, width: int, mean: int) -> None:
        self.rng, self.prefix, self.mean = rng, prefix, mean
        self.serial = 0
        self.slots = [self._new() for _ in range(width)]

    def _new(self) -> list[Any]:
        self.serial += 1
        life = max(1, round(self.rng.gauss(self.mean, self.mean / 4)))
        return [f"{self.prefix}{self.serial:08x}{self.rng.getrandbits(32):08x}", life]

    def take(self) -> str:
        i = self.rng.randrange(len(self.slots))
        slot = self.slots[i]
        slot[1] -= 1
        if slot[1] <= 0:
            self.slots[i] = self._new()
        return slot[0]


def synthetic_events(n: int, *, seed: int = 7, span_hours: float = 36.0, late: float = 0.02) -> list[Event]:
    rng = random.Random(seed)
    db = Pool(rng, "session:postgres:", 64, 20)
    aws = Pool(rng, "session:aws:", 16, 20)
    trace = Pool(rng, "trace:", 32, 10)
    req = Pool(rng, "request:", 32, 3)
    aws_req = Pool(rng, "request:aws-", 16, 3)
    commit = Pool(rng, "commit:", 16, 5)
    change = Pool(rng, "change:acme/api#", 8, 5)
    deploy = Pool(rng, "deploy:", 8, 4)
    step_us = span_hours * 3600e6 / max(n, 1)
    timed = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(1.0) * step_us
        r = rng.random()
        if r < 0.40:
            links = [db.take()] + ([trace.take()] if rng.random() < 0.05 else [])
        elif r < 0.70:
            links = [trace.take()] + ([req.take()] if rng.random() < 0.5 else [])
        elif r < 0.80:
            links = [aws.take()] + ([aws_req.take()] if rng.random() < 0.3 else [])
        elif r < 0.95:
            links = [commit.take()]
            if rng.random() < 0.4:
                links.append(change.take())
            if rng.random() < 0.2:
                links.append(deploy.take())
        else:
            links = []
        arrival = i + (rng.randint(1, 50) if rng.random() < late else 0)
        timed.append((arrival, i, int(t), links))
    timed.sort()
    out = []
    for _, i, micros, links in timed:
        out.append(
            Event(
                specversion="1.0",
                id=f"{rng.getrandbits(128):032x}",
                source="causelog://bench",
                type="bench.event",
                time=BASE + timedelta(microseconds=micros),
                scope="acme",
                actor=ACTOR,
                target=TARGET,
                action="update",
                outcome="success",
                links=tuple(links),
                source_seq=i,
            )
        )
    return out


def deep_size(state: State) -> int:
    """Bytes of the state's Python objects, each object counted once."""
    seen: set[int] = set()
    total = 0

    def add(obj: object) -> None:
        nonlocal total
        if id(obj) not in seen:
            seen.add(id(obj))
            total += sys.getsizeof(obj)

    for d in (state.buckets, state.parent, state.heads):
        add(d)
    for bucket, recs in state.buckets.items():  # live keys per type (pipeline.correlate.state)
        add(bucket)
        add(recs)
        for k, rec in recs.items():
            add(k)
            add(rec)  # one bytes object per key: nothing else to follow
    for k, v in state.parent.items():
        add(k)
        add(v)
    for k, t in state.heads.items():
        add(k)
        add(t)
    return total


def run(events: list[Event], config: CorrelationConfig) -> dict[str, Any]:
    state = State(config)
    emitted = 0
    peak = 0
    watermark = events[0].time
    times = [e.time for e in events]
    nows = []
    for t in times:  # the watermark is the caller's business: computed outside the timing
        if t > watermark:
            watermark = t
        nows.append(watermark)
    start = time.perf_counter()
    for i, (e, now) in enumerate(zip(events, nows, strict=True)):
        _, out = step(state, e, now)
        emitted += len(out)
        if not i & 1023 and state.live > peak:
            peak = state.live
    elapsed = time.perf_counter() - start
    peak = max(peak, state.live)
    live = max(state.live, 1)
    t0 = time.perf_counter()
    blob = encode_state(state)
    encode_s = time.perf_counter() - t0
    remembered = sum(len(state.events_of_key(k)) for k in state.keys)
    return {
        "events": len(events),
        "seconds": round(elapsed, 3),
        "events_per_s": round(len(events) / elapsed),
        "us_per_event": round(elapsed / len(events) * 1e6, 2),
        "emissions": emitted,
        "peak_live_keys": peak,
        "final_live_keys": state.live,
        "final_chains": len(state.heads),
        "remembered_events_per_key": round(remembered / live, 2),
        "state_bytes_per_key": round(deep_size(state) / live),
        "encoded_bytes_per_key": round(len(blob) / live),
        "encode_state_ms": round(encode_s * 1e3, 1),
    }


def verify(events: list[Event], max_per_key: int) -> bool:
    """Membership equals the offline components on ``events`` with expiry off."""
    config = CorrelationConfig(ttls=dict.fromkeys(LINK_TYPES), default_ttl=None, max_per_key=max_per_key)
    state = State(config)
    view = ChainView()
    for e in events:
        view.apply(step(state, e, e.time)[1])
    return view.chains() == components(events)


WIRE_SCOPES = tuple(f"org{i:02d}" for i in range(12))
WIRE_PARTITIONS = 4
WIRE_BATCH = 20_000


def wire_records(n: int, *, seed: int = 7) -> list[Any]:
    """``n`` chain_workload envelopes as the worker receives them: bytes at a (partition, offset)."""
    import orjson
    from factories import chain_workload

    from pipeline.store.writer import Position
    from pipeline.stream.ingest import Record

    offsets = [0] * WIRE_PARTITIONS
    out = []
    for d in chain_workload(n, seed=seed, scopes=WIRE_SCOPES, span_h=36.0)[:n]:
        p = zlib.crc32(d["scope"].encode()) % WIRE_PARTITIONS
        out.append(Record(orjson.dumps(d), Position("causelog.changes", p, offsets[p])))
        offsets[p] += 1
    return out


def run_wire(records: list[Any], config: CorrelationConfig, repeat: int) -> dict[str, Any]:
    """The worker's first stage (``BatchHandler.prepare``): decode only, correlate only, both."""
    from pipeline.correlate.partition import PartitionCorrelator, correlate_batch
    from pipeline.store.writer import EventWriter
    from pipeline.stream.correlation import Correlation
    from pipeline.stream.ingest import BatchHandler

    batches = [records[i : i + WIRE_BATCH] for i in range(0, len(records), WIRE_BATCH)]
    n = len(records)
    max_bytes = 1 << 20

    def handler(correlate: bool) -> BatchHandler:
        return BatchHandler(cast(EventWriter, None), lambda rejected: None, max_bytes=max_bytes,
                            correlation=Correlation(None, config) if correlate else None)

    def timed(fn: Any) -> float:
        best = 0.0
        for _ in range(max(1, repeat)):
            t = time.perf_counter()
            fn()
            best = max(best, n / (time.perf_counter() - t))
        return best

    def decode_only() -> None:
        h = handler(False)
        for b in batches:
            h.prepare(b)

    decoded = [handler(False).prepare(b).good for b in batches]
    out: dict[str, Any] = {}

    def correlate_only() -> None:
        correlators: dict[int, PartitionCorrelator] = {}
        total = 0
        for good in decoded:
            c = correlate_batch(correlators, ((q.event, q.position.partition, q.position.offset) for q in good), config)
            total += len(c.edges)
        out["edges"] = total

    def both() -> None:
        h = handler(True)
        for b in batches:
            h.prepare(b)

    def both_changelog() -> None:  # a checkpoint after every batch: the changelog records encoded
        h = handler(True)
        assert h.correlation is not None
        for b in batches:
            h.prepare(b)
            h.correlation.collect()

    out["events"] = n
    out["mean_bytes"] = round(sum(len(r.value) for r in records) / n)
    out["decode_events_per_s"] = round(timed(decode_only))
    out["correlate_events_per_s"] = round(timed(correlate_only))
    out["decode_correlate_events_per_s"] = round(timed(both))
    out["decode_correlate_changelog_events_per_s"] = round(timed(both_changelog))
    out["us_per_event_correlate"] = round(1e6 / out["correlate_events_per_s"], 2)
    out["us_per_event_decode_correlate"] = round(1e6 / out["decode_correlate_events_per_s"], 2)
    out["ratio_vs_target"] = round(out["decode_correlate_events_per_s"] / TARGET_EPS, 2)
    return out


def run_worker(mode: str, events: int) -> dict[str, Any]:
    """``bench_e2e.py --skip-baseline`` with ``CAUSELOG_INGEST=mode``; its JSON summary."""
    env = dict(os.environ, CAUSELOG_INGEST=mode)
    cmd = [sys.executable, str(REPO / "tests" / "bench" / "bench_e2e.py"), "--skip-baseline", "--json",
           "--events", str(events)]
    print(f"[bench] worker end to end, CAUSELOG_INGEST={mode}, {events:,} events: {' '.join(cmd[1:])}",
          file=sys.stderr, flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    sys.stderr.write(done.stderr[-2000:])
    last = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not last:
        return {"mode": mode, "error": f"bench_e2e exited {done.returncode}"}
    pipe = json.loads(last[-1]).get("pipeline") or {}
    rate = float(pipe.get("rate") or 0.0)
    return {
        "mode": mode, "events": pipe.get("events"), "seconds": round(float(pipe.get("elapsed") or 0.0), 2),
        "events_per_s": round(rate), "ratio_vs_target": round(rate / TARGET_EPS, 2),
        "cpu_us_per_event": (round(pipe["cpu_seconds"] / pipe["events"] * 1e6) if pipe.get("cpu_seconds") else None),
    }


def section(title: str, rows: dict[str, Any]) -> None:
    print(f"\n== {title}", flush=True)
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"  {k:<{width}}  {v}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--max-per-key", type=int, default=CorrelationConfig().max_per_key)
    p.add_argument("--span-hours", type=float, default=36.0)
    p.add_argument("--late", type=float, default=0.02, help="fraction of events arriving out of order")
    p.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    p.add_argument("--verify", type=int, default=20_000, help="events checked against components() (0: skip)")
    p.add_argument("--wire", type=int, default=200_000,
                   help="events through the worker's decode + correlate stage (0: skip)")
    p.add_argument("--worker", default="agent",
                   help="comma-separated CAUSELOG_INGEST modes to run end to end with bench_e2e ('' : skip)")
    p.add_argument("--worker-events", type=int, default=50_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    events = synthetic_events(args.events, span_hours=args.span_hours, late=args.late)
    config = CorrelationConfig(max_per_key=args.max_per_key)
    runs = [run(events, config) for _ in range(max(1, args.repeat))]
    best = max(runs, key=lambda r: r["events_per_s"])
    best["runs_events_per_s"] = [r["events_per_s"] for r in runs]
    best["max_per_key"] = args.max_per_key
    best["links_per_event"] = round(sum(len(e.links) for e in events) / len(events), 2)
    best["python"] = platform.python_version()
    best["target_events_per_s"] = TARGET_EPS
    best["ratio_vs_target"] = round(best["events_per_s"] / TARGET_EPS, 2)
    best["meets_target"] = best["events_per_s"] >= TARGET_EPS
    best["target_state_bytes_per_key"] = TARGET_STATE_BYTES
    best["meets_state_target"] = best["state_bytes_per_key"] <= TARGET_STATE_BYTES
    if args.verify:
        best["membership_matches_offline"] = verify(events[: args.verify], args.max_per_key)
    del events
    section("correlation: reducer alone (step() on prebuilt Event objects, one core)", best)
    if args.wire:
        records = wire_records(args.wire)
        wire = run_wire(records, config, args.repeat)
        wire["target_events_per_s"] = TARGET_EPS
        wire["meets_target"] = wire["decode_correlate_events_per_s"] >= TARGET_EPS
        best["wire"] = wire
        section("correlation: worker CPU path (BatchHandler.prepare: decode_wire + PartitionCorrelator, one core)",
                wire)
    workers = [m.strip() for m in args.worker.split(",") if m.strip()]
    if workers:
        results = [run_worker(m, args.worker_events) for m in workers]
        best["through_worker"] = results
        for r in results:
            section(f"correlation on: through the worker end to end (CAUSELOG_INGEST={r['mode']}, Kafka -> chDB)", r)
    if args.json:
        print(json.dumps(best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
