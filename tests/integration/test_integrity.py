"""Tamper evidence with the real worker (DESIGN.md §6): indexes and roots survive kill -9,
checkpoints are signed into the table, the topic and the directory, `verify` and evidence packs
work end to end, and rows changed in the store after `causelog down` are named by `verify`."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from factories import chain_workload
from kafka_stack import Stack
from test_chains import produce_by_scope, wait_committed

N = 6_000


def workload_with_duplicates() -> list[dict[str, Any]]:
    """The chain workload, then 300 of its events again (a replayed source): dropped, no index."""
    w = chain_workload(N, seed=11)
    return w + w[100:400]


def log_rows(stack: Stack) -> list[list[Any]]:
    return stack.sql("SELECT kafka_partition, log_index, id, hex(leaf_hash) FROM DB.events "
                     "ORDER BY kafka_partition, log_index")


def latest_roots(stack: Stack) -> dict[int, tuple[int, str]]:
    rows = stack.sql("SELECT partition, argMax(size, size), argMax(hex(root), size) FROM DB.checkpoints GROUP BY partition")
    return {int(p): (int(n), r) for p, n, r in rows}


def wait_signed(stack: Stack, events: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(n for n, _ in latest_roots(stack).values()) < events:
        assert time.monotonic() < deadline, f"{latest_roots(stack)}\n{stack.log_tail()}"
        time.sleep(0.3)


# -- an independent verifier, from RFC 6962 §2.1 and the C2SP signed-note spec alone -------------

def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def rfc6962_root(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """Rebuild MTH(D[size]) from PATH(index, D[size]) by walking the RFC's recursion top down
    (the last hash of the path is the sibling of the top split)."""
    if size == 1:
        assert not path, "path too long"
        return leaf
    assert path, "path too short"
    k = 1
    while k * 2 < size:
        k *= 2
    if index < k:
        return _h(b"\x01" + rfc6962_root(index, k, leaf, path[:-1]) + path[-1])
    return _h(b"\x01" + path[-1] + rfc6962_root(index - k, size - k, leaf, path[:-1]))


def independent_check(pack: Path) -> int:
    name, hash_hex, key64 = (pack / "key.vkey").read_text().strip().split("+", 2)
    key = base64.b64decode(key64)
    assert key[0] == 1 and _h(name.encode() + b"\n" + key)[:4].hex() == hash_hex
    proofs = json.loads((pack / "proofs.json").read_text())
    checked = 0
    for line in (pack / "events.jsonl").read_bytes().splitlines():
        proof = proofs[json.loads(line)["id"]]
        text, _, sigs = (pack / proof["checkpoint"]).read_text().rpartition("\n\n")
        text += "\n"
        for sig_line in sigs.splitlines():
            dash, signer, sig64 = sig_line.split(" ")
            raw = base64.b64decode(sig64)
            if dash == "\u2014" and signer == name and raw[:4].hex() == hash_hex:
                Ed25519PublicKey.from_public_bytes(key[1:]).verify(raw[4:], text.encode())
                break
        else:
            raise AssertionError("no signature by the pack's key")
        origin, size, root64 = text.splitlines()[:3]
        assert int(size) == proof["size"]
        leaf = _h(b"\x00" + line)
        root = rfc6962_root(proof["index"], proof["size"], leaf, [base64.b64decode(h) for h in proof["hashes"]])
        assert root == base64.b64decode(root64)
        checked += 1
    return checked


def test_kill_9_mid_batch_gives_the_indexes_and_roots_of_an_uninterrupted_run(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    work = workload_with_duplicates()
    unique = len({d["id"] for d in work})
    fast = {"CAUSELOG_TOPIC_PREFIX": prefix, "CAUSELOG_SIGN_SECONDS": "0.5"}
    steady = Stack(kafka_bootstrap, tmp_path / "steady", **fast)
    crashy = Stack(kafka_bootstrap, tmp_path / "crashy", CAUSELOG_BATCH_SIZE="150", CAUSELOG_CHECKPOINT_SECONDS="0.3",
                   **fast)
    try:
        steady.ensure_topics()
        produce_by_scope(steady, work)
        steady.start_worker()
        worker = crashy.start_worker()
        for threshold in (N // 5, N // 2):
            deadline = time.monotonic() + 120
            while crashy.sql("SELECT count() FROM DB.events")[0][0] < threshold:
                assert time.monotonic() < deadline, crashy.log_tail()
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            crashy.workers = []
            worker = crashy.start_worker()
        for s in (steady, crashy):
            s.wait_rows(unique)
            wait_committed(s)
            wait_signed(s, unique)
        uninterrupted = log_rows(steady)
        assert len(uninterrupted) == unique == len(work) - 300  # the 300 duplicates got no index
        by_log: dict[int, list[int]] = {}
        for p, i, _, _ in uninterrupted:
            by_log.setdefault(p, []).append(i)
        assert all(ix == list(range(len(ix))) for ix in by_log.values())
        assert log_rows(crashy) == uninterrupted
        assert latest_roots(crashy) == latest_roots(steady)
        for s in (steady, crashy):
            out = s.cli("verify")
            assert out.returncode == 0, out.stdout + out.stderr
            assert out.stdout.startswith(f"ok: {len(by_log)} logs, {unique:,} events")
    finally:
        steady.stop_workers(signal.SIGKILL)
        crashy.stop_workers(signal.SIGKILL)


def tamper_and_verify(stack: Stack, statement: str) -> dict[str, Any]:
    """With the worker down: change the embedded store directly, then run `causelog verify --json`."""
    script = (
        "import sys; from pipeline.settings import load; from pipeline.store import open_store\n"
        "s = open_store(load())\n"
        f"s.command({statement!r}.replace('DB.', s.database + '.') + ' SETTINGS mutations_sync = 2')\n"
        "s.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], env=stack.env, check=True, timeout=120)
    out = stack.cli("verify", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    return orjson.loads(out.stdout)


def test_signed_checkpoints_verify_evidence_and_tampering_after_down(stack: Stack, tmp_path: Path) -> None:
    cpdir = tmp_path / "checkpoints"
    stack.env.update(CAUSELOG_SIGN_SECONDS="0.5", CAUSELOG_CHECKPOINT_DIR=str(cpdir))
    work = chain_workload(1500, seed=3)
    produce_by_scope(stack, work)
    stack.start_worker()
    stack.wait_rows(len(work))
    wait_committed(stack)
    wait_signed(stack, len(work))

    vkey = stack.cli("keys", "show", check=True).stdout.splitlines()[0]
    assert vkey.startswith("causelog/") and len(vkey.split("+")[1]) == 8
    key_file = stack.home / "signing.key"
    assert key_file.stat().st_mode & 0o777 == 0o600

    logs = stack.sql("SELECT uniqExact(kafka_partition) FROM DB.events")[0][0]
    ok = stack.cli("verify", check=True).stdout
    assert ok.startswith(f"ok: {logs} logs, {len(work):,} events; latest checkpoints (log@size): "), ok
    # Every checkpoint also went to the compacted topic and the directory.
    notes = stack.read_topic(stack.settings.topic_checkpoints, expected=1, timeout=20)
    files = [p for p in cpdir.rglob("*") if p.is_file()]
    assert notes and files
    assert {m.value().decode() for m in notes} >= {f.read_text() for f in files}
    origins = {m.value().decode().split("\n")[0] for m in notes}
    assert all(o.startswith("causelog/") and o.rsplit("/", 1)[1].isdigit() for o in origins)

    ids = [work[5]["id"], work[700]["id"], work[-1]["id"]]
    pack = tmp_path / "pack"
    stack.cli("evidence", *ids, "--out", str(pack), check=True)
    assert stack.cli("verify-pack", str(pack), check=True).stdout.startswith("ok: 3 event(s) proven")
    assert independent_check(pack) == 3
    assert (pack / "key.vkey").read_text().strip() == vkey
    line = (pack / "events.jsonl").read_bytes().splitlines()[1]
    stored = stack.sql(f"SELECT envelope FROM DB.events WHERE id = '{ids[1]}'")[0][0]
    assert line == stored.encode()

    # `chain --evidence` and `why --evidence` pack the events they show.
    chain_pack = tmp_path / "chain-pack"
    chain = orjson.loads(stack.cli("chain", ids[1], "--json", "--evidence", str(chain_pack), check=True).stdout)
    checked = stack.cli("verify-pack", str(chain_pack), check=True).stdout
    assert checked.startswith(f"ok: {len(chain['events'])} event(s) proven")
    assert "causelog chain" in (chain_pack / "query.txt").read_text()
    why_pack = tmp_path / "why-pack"
    target = work[700]["target"]["id"]
    stack.cli("why", target, "--at", "2026-11-28 00:00", "--window", "2d", "--evidence", str(why_pack), check=True)
    assert independent_check(why_pack) >= 1

    # Stop (final checkpoints signed), then change rows directly in the store.
    stack.stop_workers()
    report = tamper_and_verify(stack, f"ALTER TABLE DB.events UPDATE envelope = replace(envelope, 'success', 'failure') "
                                      f"WHERE id = '{ids[1]}'")
    bad = [r for r in report["logs"] if r["first_bad"]]
    assert len(bad) == 1 and bad[0]["first_bad"]["event_id"] == ids[1]
    assert bad[0]["first_bad"]["kind"] == "modified"
    out = stack.cli("verify-pack", str(pack))
    assert out.returncode == 0  # the pack holds the bytes as they were: it still proves them
    report = tamper_and_verify(stack, f"ALTER TABLE DB.events DELETE WHERE id = '{ids[0]}'")
    kinds = {r["first_bad"]["kind"] for r in report["logs"] if r["first_bad"]}
    assert "deleted" in kinds


def _go() -> str | None:
    import shutil

    return shutil.which("go") or (str(Path("/usr/local/go/bin/go")) if Path("/usr/local/go/bin/go").exists() else None)


GO_MAIN = r'''
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func main() {
	dir := os.Args[1]
	vkey, _ := os.ReadFile(filepath.Join(dir, "key.vkey"))
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil { fmt.Println("vkey:", err); os.Exit(1) }
	var proofs map[string]struct{ Index, Size int64; Hashes []string; Checkpoint string }
	raw, _ := os.ReadFile(filepath.Join(dir, "proofs.json"))
	if err := json.Unmarshal(raw, &proofs); err != nil { fmt.Println(err); os.Exit(1) }
	events, _ := os.ReadFile(filepath.Join(dir, "events.jsonl"))
	n := 0
	for _, line := range strings.Split(strings.TrimSuffix(string(events), "\n"), "\n") {
		var ev struct{ Id string }
		json.Unmarshal([]byte(line), &ev)
		p := proofs[ev.Id]
		msg, _ := os.ReadFile(filepath.Join(dir, p.Checkpoint))
		nt, err := note.Open(msg, note.VerifierList(v))
		if err != nil { fmt.Println("note:", err); os.Exit(1) }
		lines := strings.Split(nt.Text, "\n")
		size, _ := strconv.ParseInt(lines[1], 10, 64)
		root, err := tlog.ParseHash(lines[2])
		if err != nil || size != p.Size { fmt.Println("checkpoint body", err); os.Exit(1) }
		var proof tlog.RecordProof
		for _, h := range p.Hashes { b, _ := base64.StdEncoding.DecodeString(h); var x tlog.Hash; copy(x[:], b); proof = append(proof, x) }
		if err := tlog.CheckRecord(proof, size, root, p.Index, tlog.RecordHash([]byte(line))); err != nil {
			fmt.Println("event", ev.Id, err); os.Exit(1)
		}
		n++
	}
	fmt.Println("ok", n)
}
'''


def test_pack_verifies_with_go_sumdb_note_and_tlog(tmp_path: Path) -> None:
    """The Done-when of issue 10: Go's golang.org/x/mod/sumdb/{note,tlog} accept a pack."""
    go = _go()
    if go is None:
        pytest.skip("go is not installed (needs /usr/local/go/bin/go or go on PATH)")
    from pipeline.integrity.checkpoint import Checkpoint
    from pipeline.integrity.merkle import Tree, leaf_hash
    from pipeline.integrity.note import Signer
    from pipeline.integrity.pack import PackEvent, make_pack, write_pack

    signer = Signer.generate("causelog/go-interop")
    envelopes = [orjson.dumps({"id": f"e{i}", "n": i}) for i in range(37)]
    tree = Tree([leaf_hash(e) for e in envelopes])
    cp = Checkpoint("causelog/go-interop/0", 37, tree.root())
    events = [PackEvent(f"e{i}", envelopes[i], 0, i) for i in (0, 5, 31, 36)]
    pack = tmp_path / "pack"
    write_pack(pack, make_pack(events, {0: (tree, cp, cp.sign(signer))}, signer.verifier.vkey, "test"))
    src = tmp_path / "gocheck"
    src.mkdir()
    (src / "main.go").write_text(GO_MAIN)
    env = {"PATH": f"{Path(go).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "GOPATH": str(tmp_path / "gopath"),
           "GOFLAGS": "-mod=mod", "GOCACHE": str(tmp_path / "gocache")}
    subprocess.run([go, "mod", "init", "gocheck"], cwd=src, env=env, check=True, capture_output=True, timeout=60)
    got = subprocess.run([go, "get", "golang.org/x/mod@latest"], cwd=src, env=env, capture_output=True, text=True,
                         timeout=300)
    if got.returncode != 0:
        pytest.skip(f"cannot fetch golang.org/x/mod from the Go module proxy: {got.stderr.strip()[:200]}")
    run = subprocess.run([go, "run", ".", str(pack)], cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok 4", run.stdout + run.stderr
    # One byte of one event changed: Go refuses the proof.
    lines = (pack / "events.jsonl").read_bytes().replace(b'"n":5', b'"n":6')
    (pack / "events.jsonl").write_bytes(lines)
    run = subprocess.run([go, "run", ".", str(pack)], cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "event e5" in run.stdout, run.stdout + run.stderr


def test_a_signing_source_cannot_be_forged_by_a_kafka_writer(stack: Stack, tmp_path: Path) -> None:
    from factories import event_dict
    from kafka_stack import header

    from pipeline.integrity.note import Signer

    key = Signer.generate("test-connector")
    (tmp_path / "source.key").write_text(key.skey + "\n")
    (tmp_path / "source-keys").write_text(f"causelog://test {key.verifier.vkey}\n")
    stack.env["CAUSELOG_SOURCE_KEYS"] = str(tmp_path / "source-keys")
    stack.start_worker()
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(event_dict(i)) for i in range(5)))
    signed_env = dict(stack.env, CAUSELOG_SOURCE_SIGNING_KEY=str(tmp_path / "source.key"))
    subprocess.run([sys.executable, "-m", "pipeline.cli.main", "produce", str(events)], env=signed_env, check=True,
                   capture_output=True, timeout=120)
    stack.produce([orjson.dumps(event_dict(99))])  # written straight to Kafka, unsigned
    stack.wait_records(6)
    assert stack.sql("SELECT count() FROM DB.events")[0][0] == 5
    dlq = stack.read_topic(stack.settings.topic_dlq, expected=1, timeout=20)
    assert [header(m, "reason") for m in dlq] == ["bad_signature"]
    assert orjson.loads(dlq[0].value())["id"] == event_dict(99)["id"]


def test_prune_with_a_hold_through_the_worker_keeps_verify_green(stack: Stack, tmp_path: Path) -> None:
    from factories import event_dict

    stack.env.update(CAUSELOG_SIGN_SECONDS="0.3", CAUSELOG_RETENTION=str(tmp_path / "retention.yaml"))
    (tmp_path / "retention.yaml").write_text("retention:\n  config.changed: 1d\n")
    stack.start_worker()
    stack.produce([orjson.dumps(event_dict(i)) for i in range(40)])
    stack.wait_rows(40)
    wait_committed(stack)
    wait_signed(stack, 40)
    hold_id = stack.cli("hold", "add", "--target", "svc-3", "--reason", "case 7", check=True).stdout.strip()
    assert hold_id in stack.cli("hold", "list", check=True).stdout
    out = stack.cli("prune", check=True).stdout
    kept = sum(1 for i in range(40) if i % 13 == 3)
    assert out.startswith(f"removed {40 - kept} events"), out
    assert stack.sql("SELECT count() FROM DB.events")[0][0] == kept
    ok = stack.cli("verify", check=True).stdout
    assert f"{40 - kept} pruned by retention" in ok, ok
