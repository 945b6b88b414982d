#!/usr/bin/env python
"""The figures of a ``make bench`` run next to their targets, in one table.

Reads the results the benches left in a directory (``make bench`` passes ``$(BENCH_OUT)``):

* ``e2e.json`` (``bench_e2e.py --out``): worker / raw baseline throughput ratio, target >= 0.60;
* ``freshness.json`` (``bench_freshness.py --out``): produced -> queryable p99, target < 2 s at
  5,000 events/s for 5 minutes;
* ``correlate.out`` (``bench_correlate.py --json`` output; its last JSON line): correlation state
  bytes per live key, target <= 300, and the reducer's events/s, target >= 50,000;
* ``rules.out`` (``bench_rules.py --json`` output), when present: rules evaluation events/s
  (target: at least the worker's throughput) and event -> alert p99 (target < 2 s) if measured.

A figure that is missing (its bench failed or did not run) shows as "not measured" and makes the
exit code 1, so ``make bench`` fails when a bench could not run; a target that is missed does
not (benchmarks inform).

    .venv/bin/python tests/bench/summary.py .bench
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def last_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (a whole-file JSON, or the last line starting with ``{``)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in [text.strip(), *reversed(text.splitlines())]:
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def machine() -> str:
    """CPU model, cores and RAM of this box."""
    model = platform.processor() or "unknown CPU"
    ram = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {ram} RAM, Python {platform.python_version()}"


Row = tuple[str, str, str, bool | None]  # figure, value, target, met (None: not measured)


def rows(out: Path) -> list[Row]:
    """The summary rows from the result files in ``out``."""
    table: list[Row] = []
    e2e = last_json(out / "e2e.json")
    ratio = e2e.get("ratio") if e2e else None
    if e2e and ratio is not None:
        pipe, base = e2e.get("pipeline") or {}, e2e.get("baseline") or {}
        table.append(("worker / raw baseline throughput",
                      f"{ratio:.2f} ({pipe.get('rate', 0):,.0f} vs {base.get('rate', 0):,.0f} ev/s, "
                      f"{e2e.get('events', 0):,} events)", f">= {e2e.get('target', 0.6):.2f}", ratio >= e2e.get("target", 0.6)))
    else:
        table.append(("worker / raw baseline throughput", "not measured", ">= 0.60", None))

    fresh = last_json(out / "freshness.json")
    if fresh and fresh.get("p99_s") is not None:
        size = f"{fresh['achieved_rate']:,.0f} ev/s for {fresh['seconds']:.0f} s"
        short = "" if fresh.get("full_size_run") else ", short run"
        table.append(("freshness p99 (produced -> queryable)",
                      f"{fresh['p99_s']:.2f} s (p50 {fresh['p50_s']:.2f}, max {fresh['max_s']:.2f}; {size}{short}; "
                      f"{fresh.get('missing', 0)} missing)",
                      "< 2 s at 5,000 ev/s for 5 min", bool(fresh.get("met"))))
    else:
        table.append(("freshness p99 (produced -> queryable)", "not measured", "< 2 s at 5,000 ev/s for 5 min", None))

    corr = last_json(out / "correlate.out")
    per_key = corr.get("state_bytes_per_key") if corr else None
    if corr and per_key is not None:
        enc = corr.get("encoded_bytes_per_key")
        table.append(("correlation state per live key",
                      f"{per_key:,} B in memory" + (f" ({enc:,} B encoded)" if enc is not None else "")
                      + f", {corr.get('final_live_keys', 0):,} live keys", "<= 300 B", per_key <= 300))
    else:
        table.append(("correlation state per live key", "not measured", "<= 300 B", None))
    if corr and corr.get("events_per_s") is not None:
        target = corr.get("target_events_per_s", 50_000)
        table.append(("correlation reducer alone", f"{corr['events_per_s']:,.0f} ev/s", f">= {target:,} ev/s",
                      corr["events_per_s"] >= target))

    rules = last_json(out / "rules.out")
    if rules and rules.get("events_per_s") is not None:
        worker_rate = (e2e or {}).get("pipeline", {}) or {}
        target = max(int(rules.get("target_events_per_s", 13_000)), int(worker_rate.get("rate", 0)))
        table.append(("rules evaluation (step, {} rules)".format(rules.get("rules", "?")),
                      f"{rules['events_per_s']:,} ev/s", f">= {target:,} ev/s (the worker's)", rules["events_per_s"] >= target))
        lat = rules.get("latency") or {}
        if lat.get("p99_s") is not None:
            table.append(("rules event -> alert p99", f"{lat['p99_s']:.2f} s", "< 2 s", lat["p99_s"] < 2))
    return table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else os.environ.get("BENCH_OUT", ".bench"))
    table = rows(out)
    width = [max(len(r[i]) for r in table) for i in range(3)]
    head = ("figure", "measured", "target")
    print()
    print(f"causelog benchmark summary ({out})")
    print(f"machine: {machine()}")
    print("  ".join(h.ljust(w) for h, w in zip(head, width, strict=True)) + "  verdict")
    print("  ".join("-" * w for w in width) + "  -------")
    for name, value, target, met in table:
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        print("  ".join(c.ljust(w) for c, w in zip((name, value, target), width, strict=True)) + f"  {verdict}")
    return 1 if any(met is None for *_, met in table[:3]) else 0


if __name__ == "__main__":
    sys.exit(main())
