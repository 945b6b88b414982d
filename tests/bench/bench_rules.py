#!/usr/bin/env python
"""Rules evaluation throughput: ``Engine.step()`` with 200 rules loaded, one core.

Rules: the built-in pack plus generated Sigma rules in the shapes community rules use
(``eventSource``/``eventName`` lists, ``contains``/``startswith``/``re`` values, ``not 1 of
filter_*``, dotted paths, keyword-free), spread over the native logsources the sample covers
(aws/cloudtrail, okta, github/audit, kubernetes/audit) and ``product: causelog``, plus a few
``event_count`` correlations, until ``--rules`` (default 200) are loaded. ``SIGMAHQ_RULES`` (a
SigmaHQ ``rules/`` checkout) adds the community rules of those four logsources first.

Events: every envelope the sources make of ``../shared/data`` (3,443), converted to dicts and
repeated with fresh ids and shifted times until ``--events`` (default 200,000), built before the
clock starts. Each is stepped with its chain id and the watermark, as the rules app does.

Reported: events/s through ``step()`` (GC on), alerts produced. Target (issue 11): at least the
worker's own throughput (12-13k events/s), so rules are never the bottleneck. Benchmarks inform,
they do not fail: the exit code is 0.

    .venv/bin/python tests/bench/bench_rules.py
    .venv/bin/python tests/bench/bench_rules.py --events 20000 --json
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
    events, _ = read_events([DATA])
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
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
        "us_per_event": round(elapsed / len(items) * 1e6, 2), "alerts": alerts, "target_events_per_s": 13_000,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"rules loaded: {result['rules']} ({result['detections']} detection, {result['correlations']} "
              f"correlation)")
        print(f"step(): {result['events_per_s']:,} events/s ({result['us_per_event']} us/event) on "
              f"{result['events']:,} events, {alerts:,} alerts; target >= 13,000 events/s: "
              f"{'met' if result['events_per_s'] >= 13_000 else 'missed'}")


if __name__ == "__main__":
    main()
