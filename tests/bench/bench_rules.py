#!/usr/bin/env python
"""Rules evaluation throughput: ``Engine.step()`` with 200 rules loaded, one core.

Rules: the built-in pack plus generated Sigma rules in the shapes community rules use
(``eventSource``/``eventName`` lists, ``contains``/``startswith``/``re`` values, ``not 1 of
filter_*``, dotted paths, keyword-free), spread over the native logsources the sample covers
(aws/cloudtrail, okta, github/audit, kubernetes/audit) and ``product: causelog``, plus a few
``event_count`` correlations, until ``--rules`` (default 200) are loaded. ``SIGMAHQ_RULES`` (a
SigmaHQ ``rules/`` checkout) adds the community rules of those four logsources first.

Events: every envelope the sources make of ``../shared/data`` (4,159, under a fixed hash key),
converted to dicts and repeated with fresh ids and shifted times until ``--events`` (default
200,000), built before the clock starts. Each is stepped with its chain id and the watermark, as
the rules app does.

Reported: events/s through ``step()`` (GC on), alerts produced. Target (issue 11): at least the
worker's own throughput (about 25k events/s since issue 12), so rules are never the bottleneck.
Benchmarks inform, they do not fail: the exit code is 0.

``--latency-seconds N`` (needs ``KAFKA_BOOTSTRAP``) also measures event-to-alert latency through
the real runner (``pipeline.stream.rules_runner``, exactly-once transactions): chains records are
produced at ``--rate`` (default 2,000/s) for N seconds, a rule alerts on every one, and the time
from produce to the alert being readable (``read_committed``) in ``<prefix>.alerts`` is taken per
event. Target: p99 < 2 s.

    .venv/bin/python tests/bench/bench_rules.py
    .venv/bin/python tests/bench/bench_rules.py --events 20000 --json
    KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python tests/bench/bench_rules.py --events 20000 --latency-seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.rules.engine import Engine, Item, State, fmt_us, time_us  # noqa: E402
from pipeline.rules.loader import load  # noqa: E402
from pipeline.rules.offline import read_events  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TARGET = 25_000  # events/s: the worker's own end-to-end throughput (issue 12, 1 KB events)

_SHAPES = {
    ("aws", "cloudtrail"): [
        ("eventSource", ["iam.amazonaws.com", "sts.amazonaws.com", "s3.amazonaws.com", "ec2.amazonaws.com",
                         "cloudtrail.amazonaws.com", "ssm.amazonaws.com", "secretsmanager.amazonaws.com"]),
        ("eventName", ["CreateUser", "DeleteTrail", "PutBucketPolicy", "AssumeRole", "GetSecretValue", "RunInstances",
                       "AttachUserPolicy", "CreateAccessKey", "ConsoleLogin", "StopLogging", "DeleteFlowLogs"]),
        ("userIdentity.type", ["IAMUser", "AssumedRole", "Root"]),
        ("userAgent|contains", ["aws-cli", "Boto3", "TruffleHog", "S3 Browser", "console"]),
    ],
    ("okta", "okta"): [
        ("eventType", ["user.session.start", "user.account.privilege.grant", "policy.lifecycle.update",
                       "user.mfa.factor.deactivate", "application.lifecycle.delete", "system.api_token.create"]),
        ("outcome.result", ["SUCCESS", "FAILURE"]),
        ("actor.alternateId|endswith", ["@acme.io", "@elastic.co"]),
    ],
    ("github", "audit"): [
        ("action", ["org.add_member", "repo.destroy", "protected_branch.destroy", "org.update_member",
                    "repo.transfer", "team.add_member", "workflows.delete_workflow_run"]),
        ("actor|startswith", ["github-", "bot-"]),
    ],
    ("kubernetes", "audit"): [
        ("verb", ["create", "delete", "patch", "update", "get"]),
        ("objectRef.resource", ["secrets", "pods", "rolebindings", "clusterrolebindings", "configmaps", "deployments"]),
        ("objectRef.namespace|re", ["^kube-", "^default$", "prod"]),
    ],
}


def generated_rules(n: int, seed: int = 7) -> str:
    """``n`` Sigma rules in community shapes, as one multi-document YAML text."""
    rnd = random.Random(seed)
    docs = []
    keys = list(_SHAPES)
    for i in range(n):
        product, service = keys[i % len(keys)]
        shapes = _SHAPES[(product, service)]
        picked = rnd.sample(shapes, k=min(len(shapes), rnd.randint(1, 3)))
        sel = {field: rnd.sample(values, k=rnd.randint(1, min(3, len(values)))) for field, values in picked}
        det: dict = {"selection": sel}
        cond = "selection"
        if i % 3 == 0:
            field, values = rnd.choice(shapes)
            det["filter_main_x"] = {field: rnd.choice(values)}
            cond = "selection and not 1 of filter_main_*"
        det["condition"] = cond
        docs.append({"title": f"generated {i}", "id": f"00000000-0000-4000-8000-{i:012d}",
                     "name": f"gen_{i}", "logsource": {"product": product, "service": service},
                     "detection": det, "level": "low"})
        if i % 25 == 24:  # every 25th rule gets a correlation over itself
            docs.append({"title": f"generated correlation {i}", "id": f"00000000-0000-4000-9000-{i:012d}",
                         "correlation": {"type": "event_count", "rules": [f"gen_{i}"], "group-by": ["awsRegion"],
                                         "timespan": "10m", "condition": {"gte": 20}, "generate": True}})
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False)


def workload(n: int) -> list[Item]:
    # The normalizers hash secrets with the deployment key; without one installed they reject
    # most of the sample, so the benchmark installs a fixed key of its own.
    from pipeline.sources import keyed

    keyed.use(keyed.Hasher(b"bench-rules-fixed-hash-key-32byt"))
    events, rejected = read_events([DATA])
    assert len(events) > len(rejected), f"{len(rejected)} sample records rejected, e.g. {rejected[:1]}"
    base = sorted((msgspec.to_builtins(e) for e in events), key=lambda d: d["time"])
    chain_of = {e.id: e.id for e in events}
    t0 = time_us(base[0]["time"])
    span = time_us(base[-1]["time"]) - t0 + 1
    items = []
    for i in range(n):
        rnd, src = divmod(i, len(base))
        d = dict(base[src])
        d["id"] = f"{d['id'][:24]}{rnd:08x}"
        d["time"] = fmt_us(time_us(d["time"]) + rnd * span)
        items.append(Item(event=d, chain_id=chain_of.get(base[src]["id"]), person=None))
    return items


LATENCY_RULE = """\
title: every event
id: 00000000-0000-4000-a000-000000000001
logsource: {product: causelog}
detection:
    selection: {type|contains: '.'}
    condition: selection
"""


def latency(seconds: float, rate: int) -> dict[str, float]:
    """p50/p99 seconds from produce to a committed alert, through the real runner on a real broker."""
    import threading
    import uuid

    import orjson
    from confluent_kafka import Consumer, Producer

    from pipeline.bus import ensure_topics
    from pipeline.rules.engine import encode_item
    from pipeline.settings import load as load_settings
    from pipeline.stream.rules_runner import run_rules

    tag = uuid.uuid4().hex[:8]
    settings = load_settings({"KAFKA_BOOTSTRAP": os.environ["KAFKA_BOOTSTRAP"], "CAUSELOG_TOPIC_PREFIX": f"bench{tag}",
                              "CAUSELOG_GROUP": f"bench{tag}", "CAUSELOG_HOME": tempfile.mkdtemp()})
    ensure_topics(settings)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "r.yml").write_text(LATENCY_RULE)
        engine = Engine(load([Path(tmp)], builtin=False))
    stop = threading.Event()
    runner = threading.Thread(target=run_rules, args=(settings, engine),
                              kwargs={"stop": stop, "batch": 500, "within": 0.02}, daemon=True)
    runner.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"lat{tag}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([settings.topic_alerts])

    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for m in consumer.consume(1000, 0.1):
                if m.error() is None:
                    seen[orjson.loads(m.value())["event_ids"][0]] = time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(3)  # the runner assigns its partitions and restores its (empty) state
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    base = workload(min(10_000, int(seconds * rate)))
    start = time.perf_counter()
    for i in range(int(seconds * rate)):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(0.001, due - now))
        item = base[i % len(base)]
        eid = f"lat{i:010d}"
        ev = dict(item.event, id=eid)
        producer.produce(settings.topic_chains, encode_item(Item(event=ev, chain_id=item.chain_id)), key=b"s")
        sent[eid] = time.perf_counter()
        producer.poll(0)
    producer.flush(30)
    deadline = time.perf_counter() + 30
    while len(seen) < len(sent) and time.perf_counter() < deadline:
        time.sleep(0.1)
    done.set()
    stop.set()
    reader.join(10)
    runner.join(30)
    consumer.close()
    lat = sorted(seen[k] - sent[k] for k in sent if k in seen)
    if not lat:
        return {"events": len(sent), "alerts": 0}
    return {"events": len(sent), "alerts": len(lat), "p50_s": round(lat[len(lat) // 2], 3),
            "p99_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3), "max_s": round(lat[-1], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--latency-seconds", type=float, default=0.0)
    ap.add_argument("--rate", type=int, default=2000)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"sample data not found at {DATA}", file=sys.stderr)
        return
    extra = []
    if os.environ.get("SIGMAHQ_RULES"):
        root = Path(os.environ["SIGMAHQ_RULES"])
        extra = [root / p for p in ("cloud/aws/cloudtrail", "identity/okta", "application/github",
                                    "application/kubernetes/audit") if (root / p).is_dir()]
    first = load(extra)
    with tempfile.TemporaryDirectory() as tmp:
        need = max(0, args.rules - len(first))
        gen = Path(tmp) / "generated.yml"
        gen.write_text(generated_rules(need))
        rules = load([*extra, gen])
    assert not rules.problems, [str(p) for p in rules.problems[:5]]
    engine = Engine(rules)
    items = workload(args.events)
    state = State()
    alerts = 0
    watermark = 0
    start = time.perf_counter()
    for it in items:
        t = time_us(it.event["time"])
        watermark = t if t > watermark else watermark
        state, out = engine.step(state, it, watermark)
        alerts += len(out)
    elapsed = time.perf_counter() - start
    result = {
        "rules": len(rules), "detections": len(rules.detections), "correlations": len(rules.correlations),
        "events": len(items), "seconds": round(elapsed, 3), "events_per_s": round(len(items) / elapsed),
        "us_per_event": round(elapsed / len(items) * 1e6, 2), "alerts": alerts, "target_events_per_s": TARGET,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
    }
    if args.latency_seconds > 0 and os.environ.get("KAFKA_BOOTSTRAP"):
        result["latency"] = latency(args.latency_seconds, args.rate)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"rules loaded: {result['rules']} ({result['detections']} detection, {result['correlations']} "
              f"correlation)")
        print(f"step(): {result['events_per_s']:,} events/s ({result['us_per_event']} us/event) on "
              f"{result['events']:,} events, {alerts:,} alerts; target >= {TARGET:,} events/s: "
              f"{'met' if result['events_per_s'] >= TARGET else 'missed'}")
        if "latency" in result:
            lat = result["latency"]
            print(f"event -> alert through the runner at {args.rate:,}/s: {lat}; target p99 < 2 s: "
                  f"{'met' if lat.get('p99_s', 99) < 2 else 'missed'}")


if __name__ == "__main__":
    main()
