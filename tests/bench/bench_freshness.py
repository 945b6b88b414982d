#!/usr/bin/env python
"""Freshness of the causelog worker: event produced -> queryable, at a fixed produce rate.

A producer sends ``--rate`` events/s (default 5,000) for ``--seconds`` (default 300) into a
running worker (started like ``bench_e2e.py`` does: a fresh subprocess on fresh topics, group
and CAUSELOG_HOME, default batch settings). Every ``--sample-every``-th event is sampled: its
produce time is noted, and a reader asks the worker's SQL API (``POST /v1/sql``, the read-only
handle users query through) every ``--poll`` s which sampled ids ``events`` holds. An event's
freshness is the time from its ``produce()`` call to the answer that first showed it (an upper
bound: the row was visible by then). The report gives p50 / p99 / max, whether p99 < 2 s, the
achieved produce rate and the worker's lag (produced - stored, from ``/v1/stats``) during the
run; samples never seen within ``--drain`` s after the last produce count as missing.

Benchmarks inform, they do not fail: the exit code is 0 whether or not the target is met, and
non-zero only when the benchmark itself could not run.

    .venv/bin/python tests/bench/bench_freshness.py --seconds 30
    .venv/bin/python tests/bench/bench_freshness.py --rate 5000 --seconds 300 --out /tmp/f.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import orjson  # noqa: E402
from bench_e2e import (  # noqa: E402
    Broker,
    balanced_scopes,
    cpu_model,
    load_average,
    log,
    stack_env,
    start_worker,
)

TARGET_P99_S = 2.0
TARGET_RATE = 5000
TARGET_SECONDS = 300


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Producer:
    """Produces ``rate`` events/s for ``seconds`` on a thread, sampling every ``every``-th id."""

    def __init__(self, settings: Any, rate: int, seconds: float, size: int, every: int) -> None:
        from factories import event_dict

        from pipeline.bus import DeliveryTracker, make_producer

        self.event_dict = event_dict
        self.settings = settings
        self.rate, self.seconds, self.every = rate, seconds, every
        self.producer = make_producer(settings, partitioner="consistent_random")
        self.tracker = DeliveryTracker(self.producer)
        self.scopes = balanced_scopes()
        probe = len(orjson.dumps(event_dict(0, pad=1, scope=self.scopes[0])))
        self.pad = max(1, size - probe + 1)
        self.sampled: dict[str, float] = {}  # id -> monotonic time of its produce() call
        self.lock = threading.Lock()
        self.produced = 0
        self.bytes = 0
        self.started = self.ended = 0.0
        self.done = threading.Event()

    def event(self, i: int, now: datetime) -> tuple[str, bytes, bytes]:
        scope = self.scopes[i % len(self.scopes)]
        d = self.event_dict(i, pad=self.pad, scope=scope)
        d["id"] = f"fresh-{i:012d}-{d['id'][:16]}"
        d["time"] = now.isoformat()  # event time = now: batches cover recent, disjoint time spans
        return d["id"], orjson.dumps(d), scope.encode()

    def run(self) -> None:
        topic = self.settings.topic_changes
        tick = 0.01  # produce in 10 ms slices to keep the rate even
        self.started = start = time.monotonic()
        i = 0
        try:
            while True:
                now = time.monotonic()
                if now - start >= self.seconds:
                    break
                due = int((now - start) * self.rate)
                wall = datetime.now(UTC)
                while i < due:
                    eid, value, key = self.event(i, wall)
                    if i % self.every == 0:
                        with self.lock:
                            self.sampled[eid] = time.monotonic()
                    self.tracker.produce(topic, value, key=key)
                    self.bytes += len(value)
                    i += 1
                self.produced = i
                self.producer.poll(0)
                time.sleep(max(0.0, tick - (time.monotonic() - now)))
            self.ended = time.monotonic()
            self.tracker.flush(timeout=120)
        finally:
            self.produced = i
            self.done.set()


def watch(settings: Any, prod: Producer, poll: float, drain: float, seen: dict[str, float],
          lag: list[tuple[float, int]]) -> None:
    """Ask the worker which sampled ids it stores, until every sample is seen or ``drain`` s
    after the producer finished; note the lag (produced - stored) once a second."""
    from pipeline.cli import api

    last_lag = 0.0
    while True:
        with prod.lock:
            pending = [i for i in prod.sampled if i not in seen]
        if pending:
            ids = ",".join(f"'{i}'" for i in pending[:5000])
            # time >= now - 10 min: the events carry their produce time, so the primary key
            # (scope, time, id) narrows the read to the recent parts, as a user's query would.
            sql = f"SELECT id FROM events WHERE time >= now() - INTERVAL 10 MINUTE AND id IN ({ids})"
            try:
                rows = api.call(settings, "/v1/sql", {"sql": sql, "limit": 10000}, timeout=30)["rows"]
            except Exception as exc:  # noqa: BLE001 - a slow answer is retried; the end decides
                log(f"sample query failed (retrying): {exc}")
                rows = []
            answered = time.monotonic()
            for (eid,) in rows:
                seen.setdefault(eid, answered)
        now = time.monotonic()
        if now - last_lag >= 1.0:
            last_lag = now
            try:
                c = api.call(settings, "/v1/stats", query={"tables": "0"}, timeout=30)["worker"]
                lag.append((now, prod.produced - int(c["stored"]) - int(c["duplicates"])))
            except Exception as exc:  # noqa: BLE001
                log(f"stats failed: {exc}")
        if prod.done.is_set():
            with prod.lock:
                left = [i for i in prod.sampled if i not in seen]
            if not left or now - prod.ended > drain:
                return
        time.sleep(poll)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline.settings import load

    tmp = Path(tempfile.mkdtemp(prefix="causelog-freshness-"))
    cleanup = contextlib.ExitStack()
    cleanup.callback(shutil.rmtree, tmp, ignore_errors=True) if not args.keep else cleanup.callback(
        log, f"kept {tmp}")
    broker = Broker(tmp)
    load_before = load_average()
    with cleanup:
        cleanup.callback(broker.stop)
        broker.start()
        env = stack_env(broker.bootstrap, tmp / "stack", int(os.environ.get("CAUSELOG_BATCH_SIZE", 20000)), None)
        env.pop("CAUSELOG_BATCH_SIZE", None)  # the worker's own default, as deployed
        settings = load(env)
        start_worker(env, settings, tmp / "stack", cleanup)
        prod = Producer(settings, args.rate, args.seconds, args.size, args.sample_every)
        seen: dict[str, float] = {}
        lag: list[tuple[float, int]] = []
        log(f"producing {args.rate:,} events/s for {args.seconds:.0f}s, sampling 1 in {args.sample_every}")
        t = threading.Thread(target=prod.run, name="producer", daemon=True)
        t.start()
        watch(settings, prod, args.poll, args.drain, seen, lag)
        t.join(30)
    with prod.lock:
        sampled = dict(prod.sampled)
    fresh = [seen[i] - t0 for i, t0 in sampled.items() if i in seen]
    missing = len(sampled) - len(fresh)
    produce_s = (prod.ended or time.monotonic()) - prod.started
    in_run = [n for t, n in lag if t <= prod.ended] or [0]
    result: dict[str, Any] = {
        "target_rate": args.rate,
        "seconds": args.seconds,
        "produced": prod.produced,
        "achieved_rate": round(prod.produced / produce_s, 1) if produce_s else 0.0,
        "mean_size": round(prod.bytes / prod.produced, 1) if prod.produced else 0.0,
        "samples": len(sampled),
        "seen": len(fresh),
        "missing": missing,
        "p50_s": round(percentile(fresh, 0.50), 3) if fresh else None,
        "p99_s": round(percentile(fresh, 0.99), 3) if fresh else None,
        "max_s": round(max(fresh), 3) if fresh else None,
        "lag_max_events": max(in_run),
        "lag_mean_events": round(sum(in_run) / len(in_run)),
        "lag_end_events": in_run[-1],
        "target_p99_s": TARGET_P99_S,
        "poll_s": args.poll,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_average(),
    }
    # The target is stated for 5,000 events/s over 5 minutes; a shorter or slower run can only
    # say whether it met p99 < 2 s at what it ran.
    result["met"] = bool(fresh) and missing == 0 and result["p99_s"] < TARGET_P99_S
    result["full_size_run"] = args.rate >= TARGET_RATE and args.seconds >= TARGET_SECONDS
    return result


def report(r: dict[str, Any]) -> None:
    verdict = "met" if r["met"] else "NOT met"
    if not r["full_size_run"]:
        verdict += f" (a short run: the target is at {TARGET_RATE:,} events/s for {TARGET_SECONDS} s)"
    lines = [
        ("produce rate", f"{r['achieved_rate']:,.0f} events/s achieved (asked {r['target_rate']:,}) for "
                         f"{r['seconds']:.0f} s, {r['produced']:,} events of ~{r['mean_size']:,.0f} B"),
        ("samples", f"{r['samples']:,} ({r['seen']:,} seen, {r['missing']:,} missing)"),
        ("produced -> queryable", f"p50 {r['p50_s']} s, p99 {r['p99_s']} s, max {r['max_s']} s "
                                  f"(answers polled every {r['poll_s']} s)"),
        ("worker lag (produced - stored)", f"max {r['lag_max_events']:,}, mean {r['lag_mean_events']:,}, "
                                           f"at the end {r['lag_end_events']:,} events"),
        ("target p99 < 2 s", verdict),
        ("CPU", f"{r['cpu']}, {r['cores']} cores; load {r['load_before']} before, {r['load_after']} after"),
    ]
    width = max(len(k) for k, _ in lines)
    print("causelog freshness (event produced -> queryable through the worker's SQL API)")
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=int, default=TARGET_RATE, help="events/s to produce (default 5000)")
    p.add_argument("--seconds", type=float, default=TARGET_SECONDS, help="how long to produce (default 300)")
    p.add_argument("--size", type=int, default=1024, help="approximate bytes per event (default 1024)")
    p.add_argument("--sample-every", type=int, default=100, help="sample 1 event in N (default 100)")
    p.add_argument("--poll", type=float, default=0.1, help="seconds between sample queries (default 0.1)")
    p.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last samples (default 60)")
    p.add_argument("--json", action="store_true", help="also print a one-line JSON summary at the end")
    p.add_argument("--out", metavar="FILE", help="also write the JSON summary to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (worker log, store)")
    args = p.parse_args(argv)
    if min(args.rate, args.seconds, args.size, args.sample_every, args.poll) <= 0:
        p.error("--rate, --seconds, --size, --sample-every and --poll must be positive")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - say why; the exit code tells the rest
        log(f"benchmark failed: {exc}")
        return 1
    report(result)
    if args.json:
        print(orjson.dumps(result).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
