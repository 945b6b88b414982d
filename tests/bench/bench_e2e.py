#!/usr/bin/env python
"""End-to-end throughput of the causelog worker against a raw confluent-kafka + chDB baseline.

Both runs use a real broker and the same records (``tests/factories.event_bytes`` padded to
``--size`` bytes, keyed by one of 8 scopes spread over 4 partitions):

* pipeline: a fresh worker subprocess (``python -m pipeline.cli.main worker``) on a fresh topic,
  group and CAUSELOG_HOME. Startup and partition assignment are not timed. The clock starts at
  the first produce and stops when the worker's in-memory counters (``/v1/stats?tables=0``,
  polled every 0.05 s) reach N; ``SELECT count() FROM events`` then checks the store holds N.
* baseline: this script in ``--baseline-consumer`` mode (chDB allows one engine per process):
  a plain ``Consumer.consume(batch, within)`` loop, orjson parse, the same ``events`` row and
  schema (migrations), a clickhouse-connect insert per batch, a synchronous offset commit after
  each insert. No validation, no id lookup, no dedup token. It prints READY once its
  partitions are assigned and DONE once N rows are inserted.

Benchmarks inform, they do not fail: the exit code is 0 whether or not the ratio meets the
target, and non-zero only when the benchmark itself could not run.

    make bench BENCH_ARGS="--events 20000"
    .venv/bin/python tests/bench/bench_e2e.py --events 200000 --json
    .venv/bin/python tests/bench/bench_e2e.py --skip-baseline --profile-worker /tmp/w.svg
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import orjson  # noqa: E402

TARGET_RATIO = 0.60
PARTITIONS = 4
N_SCOPES = 8
POLL_EVERY = 0.05
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


# ------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmHWM, VmRSS) in bytes, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def balanced_scopes(n: int = N_SCOPES, partitions: int = PARTITIONS) -> list[str]:
    """``n`` scope names whose keys land evenly on ``partitions`` partitions.

    The producer uses librdkafka's ``consistent_random`` partitioner, i.e. CRC-32(key) mod the
    partition count, so the spread is known before producing.
    """
    per = n // partitions
    taken: dict[int, list[str]] = {p: [] for p in range(partitions)}
    k = 0
    while sum(len(v) for v in taken.values()) < per * partitions:
        name = f"bench-{k}"
        p = zlib.crc32(name.encode()) % partitions
        if len(taken[p]) < per:
            taken[p].append(name)
        k += 1
    return [name for p in range(partitions) for name in taken[p]]


def build_events(n: int, size: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` canonical events of about ``size`` bytes each, and their keys (the scope)."""
    from factories import event_bytes

    scopes = balanced_scopes()
    # pad=1 adds the {"note": "x"} object; every further pad byte adds exactly one byte.
    probe = len(event_bytes(n // 2, pad=1, scope=scopes[0]))
    pad = max(1, size - probe + 1)
    values = [event_bytes(i, pad=pad, scope=scopes[i % len(scopes)]) for i in range(n)]
    keys = [scopes[i % len(scopes)].encode() for i in range(n)]
    return values, keys


class Progress:
    """A rich progress bar when stdout is a terminal, nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )

    @contextlib.contextmanager
    def run(self, title: str, total: int) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
        if self._bar is None:
            yield (lambda n: None), (lambda n: None)
            return
        with self._bar as bar:
            p = bar.add_task(f"{title}: produced", total=total)
            s = bar.add_task(f"{title}: stored", total=total)
            yield (lambda n: bar.update(p, completed=n)), (lambda n: bar.update(s, completed=n))
            for t in (p, s):
                bar.remove_task(t)


# ---------------------------------------------------------------------------------- results


@dataclass
class RunResult:
    name: str
    events: int
    bytes: int
    elapsed: float = 0.0
    produce_elapsed: float = 0.0
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.elapsed if self.elapsed else 0.0

    @property
    def mb_rate(self) -> float:
        return self.bytes / self.elapsed / 1e6 if self.elapsed else 0.0

    @property
    def produce_rate(self) -> float:
        return self.events / self.produce_elapsed if self.produce_elapsed else 0.0

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            rate=round(self.rate, 1), mb_rate=round(self.mb_rate, 2), produce_rate=round(self.produce_rate, 1)
        )
        return d


# ------------------------------------------------------------------------------------- broker


class Broker:
    """The broker: ``KAFKA_BOOTSTRAP`` when set, otherwise one started with kafka.sh."""

    def __init__(self, tmp: Path) -> None:
        self.external = os.environ.get("KAFKA_BOOTSTRAP", "").strip()
        self.env: dict[str, str] | None = None
        if self.external:
            self.bootstrap = self.external
            return
        port = free_port()
        self.env = dict(
            os.environ,
            CAUSELOG_HOME=str(tmp / "kafka-home"),
            CAUSELOG_KAFKA_PORT=str(port),
            CAUSELOG_KAFKA_CONTROLLER_PORT=str(free_port()),
            PYTHON=sys.executable,
        )
        self.env.pop("KAFKA_BOOTSTRAP", None)
        self.bootstrap = f"127.0.0.1:{port}"

    def start(self) -> None:
        if self.env is None:
            log(f"using KAFKA_BOOTSTRAP={self.bootstrap}")
            return
        log(f"starting a Kafka broker on {self.bootstrap} ...")
        done = subprocess.run(["bash", str(KAFKA_SH), "start"], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"could not start Kafka:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        if self.env is not None:
            subprocess.run(["bash", str(KAFKA_SH), "stop"], env=self.env, capture_output=True, timeout=120)
            log("broker stopped")


def stack_env(bootstrap: str, home: Path, batch: int, within: float | None) -> dict[str, str]:
    """Environment of an isolated causelog deployment: own topics, group, home and API port."""
    tag = uuid.uuid4().hex[:10]
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP=bootstrap,
        CAUSELOG_HOME=str(home),
        CAUSELOG_TOPIC_PREFIX=f"bench{tag}",
        CAUSELOG_GROUP=f"bench{tag}",
        CAUSELOG_API=f"127.0.0.1:{free_port()}",
        CAUSELOG_PARTITIONS=str(PARTITIONS),
        CAUSELOG_BATCH_SIZE=str(batch),
    )
    if within is not None:
        env["CAUSELOG_BATCH_WITHIN"] = str(within)
    for name in ("CLICKHOUSE_URL", "CAUSELOG_DATABASE"):
        env.pop(name, None)
    home.mkdir(parents=True, exist_ok=True)
    return env


def produce_all(
    settings: Any, values: list[bytes], keys: list[bytes], on_progress: Callable[[int], None]
) -> tuple[float, float]:
    """Produce every record (idempotent, acks=all); return (t0 of first produce, t of last ack)."""
    from pipeline.bus import DeliveryTracker, make_producer

    producer = make_producer(settings, partitioner="consistent_random")
    tracker = DeliveryTracker(producer)
    topic = settings.topic_changes
    t0 = time.monotonic()
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        tracker.produce(topic, value, key=key)
        if i % 10_000 == 9_999:
            producer.poll(0)
            on_progress(tracker.delivered)
    tracker.flush(timeout=600)
    t_end = time.monotonic()
    on_progress(tracker.delivered)
    return t0, t_end


def partition_spread(settings: Any) -> list[int]:
    """Records per partition of the changes topic (high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"bench-probe-{uuid.uuid4().hex}"}
    )
    try:
        return [
            c.get_watermark_offsets(TopicPartition(settings.topic_changes, p), timeout=10)[1]
            for p in range(settings.partitions)
        ]
    finally:
        c.close()


def wait_group_assigned(settings: Any, timeout: float = 60.0) -> bool:
    """Wait until the worker group is Stable with every partition of the changes topic assigned."""
    from confluent_kafka import ConsumerGroupState, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 4})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = admin.describe_consumer_groups([settings.group], request_timeout=5)[
                settings.group
            ].result()
            if desc.state == ConsumerGroupState.STABLE:
                parts = {
                    tp.partition
                    for m in desc.members
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                    if tp.topic == settings.topic_changes
                }
                if len(parts) == settings.partitions:
                    return True
        except KafkaException:
            pass
        time.sleep(0.2)
    return False


def poll_pause(seen: list[tuple[float, int]], n: int, batch: int) -> float:
    """Seconds to wait before asking the worker's count again: POLL_EVERY once at most two
    batches are left (rows land a batch at a time), else a quarter of the time the rest would
    take at the rate seen since the first stored row, at most 1 s."""
    started = [(t, r) for t, r in seen if r > 0]
    if n - seen[-1][1] <= 2 * batch or len(started) < 2 or started[-1][1] <= started[0][1]:
        return POLL_EVERY
    (t0, r0), (t1, r1) = started[0], started[-1]
    eta = (n - r1) / ((r1 - r0) / (t1 - t0))
    return min(1.0, max(POLL_EVERY, eta / 4))


def stop_process(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} still alive {grace:.0f}s after SIGTERM; SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"


def find_py_spy() -> str | None:
    for cand in (os.environ.get("PY_SPY"), shutil.which("py-spy"), "/tmp/bench-tools/bin/py-spy"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


# ------------------------------------------------------------------------------- pipeline run


def start_worker(
    env: dict[str, str], settings: Any, home: Path, cleanup: contextlib.ExitStack
) -> tuple[subprocess.Popen[Any], Path]:
    """Start ``causelog worker`` with ``env`` on fresh topics; return once it is healthy and owns
    every partition (not timed). The process is stopped when ``cleanup`` closes."""
    from pipeline.bus import ensure_topics
    from pipeline.cli import api

    ensure_topics(settings)
    worker_log = home / "worker.log"
    with worker_log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "worker", "--loglevel", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
    cleanup.callback(stop_process, worker)
    started = time.monotonic()
    while api.healthy(settings, timeout=1.0) is None:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited {worker.returncode} during startup:\n{tail(worker_log)}")
        if time.monotonic() - started > 120:
            raise RuntimeError(f"worker not healthy after 120s:\n{tail(worker_log)}")
        time.sleep(0.2)
    if not wait_group_assigned(settings):
        log("warning: could not confirm the worker's partition assignment; timing anyway")
    log(
        f"worker pid {worker.pid} ready in {time.monotonic() - started:.1f}s (not timed); group {settings.group}"
    )
    return worker, worker_log


def run_pipeline(
    args: argparse.Namespace,
    bootstrap: str,
    home: Path,
    values: list[bytes],
    keys: list[bytes],
    progress: Progress,
    cleanup: contextlib.ExitStack,
) -> RunResult:
    from pipeline.cli import api
    from pipeline.settings import load

    env = stack_env(bootstrap, home, args.batch, args.within)
    settings = load(env)
    worker, worker_log = start_worker(env, settings, home, cleanup)

    spy: subprocess.Popen[Any] | None = None
    if args.profile_worker:
        exe = find_py_spy()
        if exe is None:
            raise RuntimeError("--profile-worker needs py-spy (on PATH, in $PY_SPY or /tmp/bench-tools/bin)")
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(args.profile_worker).suffix, "raw")
        cmd = [
            exe,
            "record",
            "--pid",
            str(worker.pid),
            "--rate",
            "200",
            "--threads",
            "--format",
            fmt,
            "-o",
            args.profile_worker,
            *shlex.split(args.py_spy_args),
        ]
        with (home / "py-spy.log").open("ab") as spy_log:
            spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=spy_log)
        time.sleep(1.0)  # let py-spy attach before the clock starts

    n = len(values)
    result = RunResult("pipeline", n, sum(map(len, values)))
    reached = threading.Event()
    t_reached: list[float] = []
    failure: list[str] = []
    cpu0 = proc_cpu_seconds(worker.pid)
    count_sql = {"sql": f"SELECT count() FROM {settings.database}.events"}

    with progress.run("pipeline", n) as (on_produced, on_stored):

        seen: list[tuple[float, int]] = []

        def poll_count() -> None:
            while not reached.is_set():
                if worker.poll() is not None:
                    failure.append(f"worker exited {worker.returncode}:\n{tail(worker_log)}")
                    reached.set()
                    return
                try:
                    # In-memory counters: a count() query every poll would contend with the
                    # writes it measures. The stored count is checked with SQL at the end.
                    c = api.call(settings, "/v1/stats", query={"tables": "0"}, timeout=60)["worker"]
                    rows = int(c["stored"]) + int(c["duplicates"])
                except Exception as exc:  # noqa: BLE001 - a slow answer is retried, the worker check decides
                    if not reached.is_set():
                        log(f"count query failed (retrying): {exc}")
                    rows = -1
                now = time.monotonic()
                on_stored(max(rows, 0))
                if rows >= n:
                    t_reached.append(now)
                    reached.set()
                    return
                # Each answer costs the worker GIL time: ask rarely while the end is far (at
                # the rate so far), every POLL_EVERY s near it, so the clock still stops within
                # POLL_EVERY of the last row.
                seen.append((now, max(rows, 0)))
                time.sleep(poll_pause(seen, n, args.batch))

        # Polling from before the first produce is harmless: the count cannot reach N earlier.
        threading.Thread(target=poll_count, name="count-poller", daemon=True).start()
        try:
            t0, t_produced = produce_all(settings, values, keys, on_produced)
            if not reached.wait(timeout=max(300.0, n / 500)):
                raise RuntimeError(f"pipeline did not store {n} rows in time:\n{tail(worker_log)}")
        finally:
            reached.set()  # stops the poller on every way out
        if failure:
            raise RuntimeError(failure[0])

    result.elapsed = t_reached[0] - t0
    stored = int(api.call(settings, "/v1/sql", count_sql, timeout=60)["rows"][0][0])
    if stored != n:
        raise RuntimeError(f"the worker reports {n} events done but the store holds {stored}")
    result.produce_elapsed = t_produced - t0
    cpu1 = proc_cpu_seconds(worker.pid)
    result.cpu_seconds = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    result.peak_rss = proc_status(worker.pid, "VmHWM")
    try:
        counters = api.call(settings, "/v1/stats")["worker"]
        result.extra["batches"] = counters.get("batches")
        result.extra["stored"] = counters.get("stored")
        result.extra["duplicates"] = counters.get("duplicates")
        result.extra["rejected"] = counters.get("rejected")
    except Exception as exc:  # noqa: BLE001
        log(f"could not read worker stats: {exc}")
    result.extra["partitions"] = partition_spread(settings)
    stop_process(worker)
    if spy is not None:
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        log(f"py-spy profile of the worker written to {args.profile_worker}")
    return result


# ------------------------------------------------------------------------------- baseline run


def run_baseline(
    args: argparse.Namespace,
    bootstrap: str,
    home: Path,
    values: list[bytes],
    keys: list[bytes],
    progress: Progress,
    cleanup: contextlib.ExitStack,
) -> RunResult:
    from pipeline.bus import ensure_topics
    from pipeline.settings import load

    env = stack_env(bootstrap, home, args.batch, args.within)
    settings = load(env)
    ensure_topics(settings)
    n = len(values)
    err_log = home / "baseline.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--baseline-consumer",
        "--topic",
        settings.topic_changes,
        "--group",
        settings.group,
        "--events",
        str(n),
        "--batch",
        str(args.batch),
        "--within",
        str(settings.batch_within),
    ]
    with err_log.open("ab") as err:
        child = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            cwd=REPO,
            text=True,
            bufsize=1,
        )
    cleanup.callback(stop_process, child)

    ready = threading.Event()
    done = threading.Event()
    info: dict[str, Any] = {}
    stored = [0]

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "READY":
                ready.set()
            elif word == "PROGRESS":
                stored[0] = int(rest)
            elif word == "DONE":
                info["t"] = time.monotonic()
                info.update(orjson.loads(rest))
                done.set()
        ready.set()
        done.set()

    threading.Thread(target=read, name="baseline-reader", daemon=True).start()
    started = time.monotonic()
    if not ready.wait(120) or child.poll() is not None:
        raise RuntimeError(f"baseline consumer not ready (exit {child.poll()}):\n{tail(err_log)}")
    log(f"baseline consumer pid {child.pid} ready in {time.monotonic() - started:.1f}s (not timed)")

    result = RunResult("baseline", n, sum(map(len, values)))
    with progress.run("baseline", n) as (on_produced, on_stored):
        t0, t_produced = produce_all(settings, values, keys, on_produced)
        deadline = time.monotonic() + max(300.0, n / 500)
        while not done.wait(POLL_EVERY):
            on_stored(stored[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline did not store {n} rows in time:\n{tail(err_log)}")
        on_stored(stored[0])
    if "t" not in info:
        raise RuntimeError(f"baseline consumer exited {child.wait(30)} before DONE:\n{tail(err_log)}")
    result.elapsed = info["t"] - t0
    result.produce_elapsed = t_produced - t0
    result.peak_rss = info.get("peak_rss")
    result.cpu_seconds = info.get("cpu_seconds")
    result.extra["batches"] = info.get("batches")
    result.extra["stored"] = info.get("stored")
    try:
        child.wait(60)
    except subprocess.TimeoutExpired:
        stop_process(child)
    return result


def baseline_consumer(args: argparse.Namespace) -> int:
    """The raw baseline (own process, own chDB): consume, parse, insert, commit. Nothing else."""
    from datetime import UTC, datetime

    from confluent_kafka import Consumer, KafkaException

    from pipeline.settings import load
    from pipeline.store import migrate, open_store
    from pipeline.store.writer import EVENT_COLUMNS

    settings = load()
    store = open_store(settings)
    migrate(store)
    client = store.client
    # The baseline keeps no integrity log: those columns take their defaults.
    columns = [c for c in EVENT_COLUMNS if c not in ("log_index", "leaf_hash")]
    parse_time = datetime.fromisoformat
    loads = orjson.loads

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    assigned: list[Any] = []
    consumer.subscribe([args.topic], on_assign=lambda c, parts: assigned.extend(parts))
    pending: list[Any] = []
    deadline = time.monotonic() + 60
    while not assigned:
        pending.extend(consumer.consume(num_messages=args.batch, timeout=0.1))
        if time.monotonic() > deadline:
            print("no partition assignment within 60s", file=sys.stderr)
            return 1
    print("READY", flush=True)

    cpu0 = time.process_time()
    total = 0
    batches = 0
    while total < args.events:
        msgs = pending or consumer.consume(num_messages=args.batch, timeout=args.within)
        pending = []
        if not msgs:
            continue
        now = datetime.now(UTC)
        rows = []
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            raw = m.value() or b"{}"  # the bench never produces tombstones
            d = loads(raw)
            a = d["actor"]
            t = d["target"]
            seq = d.get("source_seq")
            observed = d.get("observed_time")
            rows.append(
                [
                    d["id"],
                    d["scope"],
                    d["type"],
                    d["source"],
                    parse_time(d["time"]),
                    parse_time(observed) if observed else now,
                    d.get("subject") or "",
                    a["id"],
                    a.get("display", ""),
                    a["kind"],
                    a.get("principal", ""),
                    a.get("verified", False),
                    a["assurance"],
                    t["kind"],
                    t["id"],
                    t.get("name", ""),
                    t.get("environment", ""),
                    t.get("service", ""),
                    d["action"],
                    d["outcome"],
                    d.get("links") or [],
                    "" if seq is None else str(seq),
                    "",  # chain_id: the baseline does not correlate
                    0,  # chain_time
                    raw.decode(),
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    now,
                ]
            )
        client.insert("events", rows, column_names=columns, database=settings.database)
        consumer.commit(asynchronous=False)
        total += len(rows)
        batches += 1
        print(f"PROGRESS {total}", flush=True)
    summary = {
        "stored": total,
        "batches": batches,
        "cpu_seconds": time.process_time() - cpu0,
        "peak_rss": proc_status(os.getpid(), "VmHWM"),
    }
    print("DONE " + orjson.dumps(summary).decode(), flush=True)
    consumer.close()
    store.close()
    return 0


# ------------------------------------------------------------------------------------- report


def median_run(runs: list[RunResult] | None) -> RunResult | None:
    """The run with the median rate (the lower middle one for an even count)."""
    if not runs:
        return None
    return sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]


def report(
    results: dict[str, list[RunResult]],
    n: int,
    mean_size: float,
    bootstrap: str,
    args: argparse.Namespace,
    load_before: str,
) -> dict:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    pipe, base = median_run(results.get("pipeline")), median_run(results.get("baseline"))
    ratio = pipe.rate / base.rate if pipe and base and base.rate else None
    verdict = None if ratio is None else ("PASS" if ratio >= TARGET_RATIO else "BELOW TARGET")

    def mb(b: int | None) -> str:
        return "-" if b is None else f"{b / 2**20:,.0f} MiB"

    title = "causelog end-to-end throughput" + (f" (median of {args.repeat} runs)" if args.repeat > 1 else "")
    table = Table(title=title, box=box.SIMPLE_HEAVY, show_header=True)
    table.add_column("")
    table.add_column("pipeline (worker)", justify="right")
    table.add_column("baseline (raw)", justify="right")
    rows: list[tuple[str, Callable[[RunResult], str]]] = [
        ("events", lambda r: f"{r.events:,}"),
        ("elapsed (first produce -> N rows)", lambda r: f"{r.elapsed:.2f} s"),
        ("throughput", lambda r: f"{r.rate:,.0f} ev/s"),
        ("throughput", lambda r: f"{r.mb_rate:,.1f} MB/s"),
        ("produce only", lambda r: f"{r.produce_rate:,.0f} ev/s ({r.produce_elapsed:.2f} s)"),
        (
            "consumer CPU",
            lambda r: (
                "-"
                if r.cpu_seconds is None
                else f"{r.cpu_seconds:.1f} s ({r.cpu_seconds / r.events * 1e6:.0f} us/ev)"
            ),
        ),
        ("consumer peak RSS (VmHWM)", lambda r: mb(r.peak_rss)),
        ("insert batches", lambda r: str(r.extra.get("batches", "-"))),
    ]
    if args.repeat > 1:
        rows.append(("every run", lambda r: ", ".join(f"{x.rate:,.0f}" for x in results[r.name]) + " ev/s"))
    for label, fmt in rows:
        table.add_row(label, fmt(pipe) if pipe else "skipped", fmt(base) if base else "skipped")
    console = Console(width=max(100, shutil.get_terminal_size((100, 20)).columns))
    console.print(table)

    lines = [
        ("events", f"{n:,}"),
        ("mean event size", f"{mean_size:,.1f} B (target {args.size} B)"),
        ("worker batch (CAUSELOG_BATCH_SIZE)", f"{args.batch:,}"),
        (
            "partitions",
            f"{PARTITIONS} (records per partition: {pipe.extra.get('partitions') if pipe else '-'})",
        ),
        (
            "ratio pipeline/baseline",
            "-" if ratio is None else f"{ratio:.2f} (target >= {TARGET_RATIO:.2f}) {verdict}",
        ),
        ("CPU", f"{cpu_model()}, {os.cpu_count()} cores"),
        (
            "load average (1/5/15 min)",
            f"{load_before} before, {load_average()} after (other work on the box skews the figures)",
        ),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        (
            "Kafka bootstrap",
            bootstrap
            + (" (KAFKA_BOOTSTRAP)" if os.environ.get("KAFKA_BOOTSTRAP") else " (started by the bench)"),
        ),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")
    return {
        "events": n,
        "mean_size": round(mean_size, 1),
        "batch": args.batch,
        "pipeline": pipe.summary() if pipe else None,
        "baseline": base.summary() if base else None,
        "runs": {k: [round(r.rate, 1) for r in v] for k, v in results.items()},
        "ratio": None if ratio is None else round(ratio, 3),
        "target": TARGET_RATIO,
        "verdict": verdict,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kafka_bootstrap": bootstrap,
        "load_before": load_before,
        "load_after": load_average(),
    }


# --------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=200_000, help="records to push through (default 200000)")
    p.add_argument("--size", type=int, default=1024, help="approximate bytes per event (default 1024)")
    p.add_argument(
        "--batch", type=int, default=20_000, help="CAUSELOG_BATCH_SIZE and baseline batch (default 20000)"
    )
    p.add_argument(
        "--within",
        type=float,
        default=None,
        help="CAUSELOG_BATCH_WITHIN and baseline consume timeout (default: the setting's, 0.5)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each side N times, alternating, and report the median run (default 1)",
    )
    p.add_argument("--skip-baseline", action="store_true", help="run only the pipeline")
    p.add_argument("--skip-pipeline", action="store_true", help="run only the baseline")
    p.add_argument("--json", action="store_true", help="also print a one-line JSON summary at the end")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="also write the JSON summary to FILE (tests/bench/summary.py reads it)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, stores) for inspection")
    p.add_argument(
        "--profile-worker",
        metavar="OUT",
        default=None,
        help="attach py-spy to the worker while timed; .svg flamegraph, .json speedscope, else raw",
    )
    p.add_argument(
        "--py-spy-args", default="", help="extra py-spy record arguments, e.g. --py-spy-args='--gil'"
    )
    # Internal: the baseline consumer process.
    p.add_argument("--baseline-consumer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--group", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.events, args.batch, args.size, args.repeat) < 1:
        p.error("--events, --batch, --size and --repeat must be positive")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_consumer:
        if args.within is None:
            args.within = 0.5
        return baseline_consumer(args)
    # Ctrl-C and SIGTERM both end in the cleanup below (also when started from a shell that
    # ignores SIGINT in background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    tmp = Path(tempfile.mkdtemp(prefix="causelog-bench-"))
    results: dict[str, list[RunResult]] = {}
    load_before = load_average()
    cleanup = contextlib.ExitStack()
    if args.keep:
        cleanup.callback(log, f"kept {tmp}")
    else:
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
    broker = Broker(tmp)
    try:
        cleanup.callback(broker.stop)
        broker.start()

        t = time.monotonic()
        values, keys = build_events(args.events, args.size)
        mean_size = sum(map(len, values)) / len(values)
        log(f"built {len(values):,} events, mean {mean_size:,.1f} B, in {time.monotonic() - t:.1f}s")
        progress = Progress(sys.stdout.isatty())

        runners = [
            ("pipeline", run_pipeline, args.skip_pipeline),
            ("baseline", run_baseline, args.skip_baseline),
        ]
        for round_no in range(1, args.repeat + 1):
            # Alternate the two so a burst of load from elsewhere hits both alike.
            for name, runner, skip in runners:
                if skip:
                    continue
                r = runner(
                    args, broker.bootstrap, tmp / f"{name}-{round_no}", values, keys, progress, cleanup
                )
                results.setdefault(name, []).append(r)
                log(
                    f"{name} #{round_no}: {r.rate:,.0f} ev/s ({r.elapsed:.2f}s; produce {r.produce_elapsed:.2f}s); "
                    f"load {load_average()}"
                )
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception as exc:  # noqa: BLE001 - report and clean up; the exit code tells the rest
        log(f"benchmark failed: {exc}")
        if args.keep:
            log(f"logs in {tmp}")
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave a broker or worker behind.
        handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            cleanup.close()
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
    summary = report(results, args.events, mean_size, broker.bootstrap, args, load_before)
    if args.json:
        print(orjson.dumps(summary).decode())
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
