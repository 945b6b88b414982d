#!/usr/bin/env python
"""Cost of tamper evidence (issue 10): the log in the worker's write path, and `verify` speed.

Three sections, each on events of ``--size`` bytes (``tests/factories.event_bytes`` padded),
spread over 4 partitions (logs):

* **CPU per event** of the log alone: ``leaf_hash`` of the envelope + ``Frontier.append``.
* **store write, integrity on vs off**: ``EventWriter.write`` in batches of 20,000 into a fresh
  embedded chDB store, once with the logs (index assignment, leaf hashes, two more columns) and
  once without; events/s and the ratio (target of the issue for the whole worker: >= 0.90).
* **verify**: one signed checkpoint per log, then ``pipeline.store.integrity.verify`` over all
  ``--events`` rows (read the envelopes, recompute every leaf, rebuild the trees, check
  signatures, roots and consistency): events/s. ``--evidence K`` also times a pack of K events.

The worker end to end with integrity on/off: ``CAUSELOG_INTEGRITY=off`` with
``tests/bench/bench_e2e.py --skip-baseline`` (the worker inherits the environment).
Benchmarks inform, they do not fail: the exit code is 0 either way.

    .venv/bin/python tests/bench/bench_integrity.py --events 1000000
    .venv/bin/python tests/bench/bench_integrity.py --events 50000 --json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import orjson  # noqa: E402
from factories import event_bytes  # noqa: E402

from pipeline.integrity.checkpoint import Checkpoint  # noqa: E402
from pipeline.integrity.log import PartitionLog  # noqa: E402
from pipeline.integrity.merkle import Frontier, leaf_hash  # noqa: E402
from pipeline.integrity.note import Signer  # noqa: E402
from pipeline.model.codec import decode_wire  # noqa: E402
from pipeline.settings import load  # noqa: E402
from pipeline.store import EventWriter, Pending, Position, migrate, open_store  # noqa: E402
from pipeline.store.integrity import evidence, verify  # noqa: E402

TOPIC = "bench.changes"
BATCH = 20_000
PARTITIONS = 4


def build(n: int, size: int, offset: int = 0) -> list[Pending]:
    out = []
    for i in range(offset, offset + n):
        raw = event_bytes(i, pad=max(0, size - 420))
        out.append(Pending(decode_wire(raw, max_bytes=1 << 20), raw, Position(TOPIC, i % PARTITIONS, i // PARTITIONS)))
    return out


def write_all(store, events: list[Pending], logs: dict[int, PartitionLog] | None) -> float:
    writer = EventWriter(store)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for lo in range(0, len(events), BATCH):
        result = writer.write(events[lo:lo + BATCH], now=now, logs=logs)
        if logs is not None:
            logs.update(result.logs)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--compare", type=int, default=200_000, help="events for the on/off write comparison")
    p.add_argument("--evidence", type=int, default=100)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    figures: dict[str, float] = {}

    sample = [event_bytes(i, pad=max(0, args.size - 420)) for i in range(50_000)]
    f = Frontier()
    t0 = time.perf_counter()
    for raw in sample:
        f.append(leaf_hash(raw))
    figures["log_cpu_us_per_event"] = (time.perf_counter() - t0) / len(sample) * 1e6
    print(f"log CPU (leaf hash + frontier append): {figures['log_cpu_us_per_event']:.2f} µs/event")

    with tempfile.TemporaryDirectory() as home:
        store = open_store(load({"CAUSELOG_HOME": home, "CAUSELOG_DATABASE": "bench"}))
        migrate(store)
        n = min(args.compare, args.events)
        off = build(n, args.size, offset=10**8)
        t_off = write_all(store, off, None)
        store.command("TRUNCATE TABLE bench.events")
        del off
        events = build(args.events, args.size)
        logs: dict[int, PartitionLog] = {}
        t_on = write_all(store, events[:n], logs)
        figures["write_off_ev_s"] = n / t_off
        figures["write_on_ev_s"] = n / t_on
        figures["write_ratio"] = t_off / t_on
        print(f"store write of {n:,} events: integrity off {n / t_off:,.0f} ev/s, on {n / t_on:,.0f} ev/s, "
              f"ratio {t_off / t_on:.2f} (target >= 0.90)")
        if args.events > n:
            write_all(store, events[n:], logs)
        ids = [e.event.id for e in events[:: max(1, len(events) // args.evidence)]][: args.evidence]
        del events
        key = Signer.generate("causelog/bench")
        rows = []
        for part, lg in sorted(logs.items()):
            cp = Checkpoint(f"causelog/bench/{part}", lg.size, lg.root())
            rows.append([cp.origin, TOPIC, part, cp.size, cp.root, cp.sign(key), key.name, datetime.now(UTC)])
        store.insert("checkpoints", rows, ["origin", "topic", "partition", "size", "root", "note", "key_name",
                                           "signed_at"])
        t0 = time.perf_counter()
        result = verify(store, TOPIC, [key.verifier])
        t_verify = time.perf_counter() - t0
        assert result.ok, result.to_json()
        figures["verify_ev_s"] = args.events / t_verify
        figures["verify_s"] = t_verify
        print(f"verify {args.events:,} events in {PARTITIONS} logs: {t_verify:.1f} s, {args.events / t_verify:,.0f} ev/s "
              f"({result.summary()[:60]}...)")
        t0 = time.perf_counter()
        files = evidence(store, TOPIC, ids, [key.verifier], "bench")
        figures["evidence_s"] = time.perf_counter() - t0
        print(f"evidence pack of {len(ids)} events: {figures['evidence_s']:.2f} s ({len(files['events.jsonl']):,} bytes)")
        store.close()
    if args.json:
        print(orjson.dumps({"events": args.events, "size": args.size, **figures}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
