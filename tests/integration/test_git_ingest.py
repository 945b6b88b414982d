"""`causelog ingest git` on a real repository built here, into a real broker.

Two branches, a merge, an annotated tag and one commit signed with a throwaway SSH key; ingesting
produces exactly the expected events, a new commit produces exactly one more, and a third run
produces nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kafka_stack import Stack

from pipeline.model import Event, decode

pytestmark = pytest.mark.integration

# Until the lead registers the command in `causelog ingest`, run the CLI with it added.
_CLI = (
    "import sys\n"
    "from pipeline.cli.ingest import ingest\n"
    "from pipeline.cli import ingest_git\n"
    "if 'git' not in ingest.commands: ingest_git.register(ingest)\n"
    "from pipeline.cli.main import main\n"
    "main()\n"
)


def _causelog(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, *args], env=stack.env, capture_output=True, text=True,
                          timeout=120)


def _git(repo: Path, *args: str, date: str | None = None) -> str:
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_SYSTEM="/dev/null")
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    out = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def _commit(repo: Path, name: str, content: str, message: str, date: str, *extra: str) -> str:
    (repo / name).write_text(content)
    _git(repo, "add", name)
    _git(repo, "commit", "-q", *extra, "-m", message, date=date)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, Any]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed: cannot sign a commit with a test SSH key")
    r = tmp_path / "repo"
    r.mkdir()
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@example.com", "-f", str(key)],
                   check=True, capture_output=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.com {(tmp_path / 'key.pub').read_text().strip()}\n")
    _git(r, "init", "-q", "-b", "main")
    for kv in (("user.name", "Alice"), ("user.email", "alice@example.com"), ("gpg.format", "ssh"),
               ("user.signingkey", str(key)), ("gpg.ssh.allowedSignersFile", str(allowed)),
               ("commit.gpgsign", "false"), ("tag.gpgsign", "false")):
        _git(r, "config", *kv)
    shas: dict[str, str] = {}
    shas["c1"] = _commit(r, "app.yaml", "replicas: 1\n", "initial config", "2026-01-01T10:00:00Z")
    _git(r, "checkout", "-q", "-b", "feature")
    shas["f1"] = _commit(r, "feature.py", "print('x')\n", "add feature", "2026-01-01T11:00:00Z")
    _git(r, "checkout", "-q", "main")
    shas["c2"] = _commit(r, "app.yaml", "replicas: 3\n", "scale up", "2026-01-01T12:00:00Z")
    _git(r, "merge", "-q", "--no-ff", "feature", "-m", "merge feature", date="2026-01-01T13:00:00Z")
    shas["merge"] = _git(r, "rev-parse", "HEAD")
    shas["signed"] = _commit(r, "README", "hello\n", "signed change", "2026-01-01T14:00:00Z", "-S")
    _git(r, "tag", "-a", "v1.0", "-m", "release 1.0", date="2026-01-01T15:00:00Z")
    assert _git(r, "log", "-1", "--format=%G?", shas["signed"]) == "G"
    return {"path": r, "shas": shas}


def _events(stack: Stack, expected: int) -> list[Event]:
    return [decode(m.value()) for m in stack.read_topic(stack.settings.topic_changes, expected=expected, timeout=30)]


def test_ingest_real_repository_then_incrementally(stack: Stack, repo: dict[str, Any]) -> None:
    path: Path = repo["path"]
    shas: dict[str, str] = repo["shas"]
    first = _causelog(stack, "ingest", "git", str(path), "--scope", "acme")
    assert first.returncode == 0, first.stderr
    assert "6 records -> 6 events" in first.stderr, first.stderr

    events = _events(stack, 6)
    assert len(events) == 6
    by_sha = {e.raw["sha"]: e for e in events if e.type != "git.tag"}
    assert set(by_sha) == set(shas.values())
    assert all(e.scope == "acme" and e.target.kind in ("repo", "tag") for e in events)
    assert all(e.target.id == str(path.resolve()) for e in by_sha.values())
    # Parents are always emitted before their children.
    order = [e.raw.get("sha") for e in events]
    assert order.index(shas["c1"]) < order.index(shas["f1"]) < order.index(shas["merge"])
    assert order.index(shas["c2"]) < order.index(shas["merge"]) < order.index(shas["signed"])

    for name in ("c1", "f1", "c2", "signed"):
        e = by_sha[shas[name]]
        assert e.type == "git.commit" and e.links == (f"commit:{shas[name]}",)
    merge = by_sha[shas["merge"]]
    assert merge.type == "git.merge" and merge.action == "merge"
    assert merge.links == (f"commit:{shas['merge']}", f"commit:{shas['f1']}")
    assert merge.raw["files"] == [{"status": "A", "path": "feature.py"}]  # vs first parent

    signed = by_sha[shas["signed"]]
    assert signed.actor.assurance == "signed" and signed.actor.verified
    assert signed.raw["signature"]["status"] == "G" and signed.raw["signature"]["key"].startswith("SHA256:")
    for name in ("c1", "f1", "c2", "merge"):
        a = by_sha[shas[name]].actor
        assert (a.assurance, a.verified, a.id, a.kind) == ("claimed", False, "git:alice@example.com", "human")
    assert by_sha[shas["c2"]].raw["files"] == [{"status": "M", "path": "app.yaml"}]
    assert by_sha[shas["c2"]].time.isoformat() == "2026-01-01T12:00:00+00:00"
    assert by_sha[shas["c2"]].subject == "scale up"

    [tag] = [e for e in events if e.type == "git.tag"]
    assert tag.links == (f"commit:{shas['signed']}",) and tag.target.name == "v1.0"
    assert tag.raw["annotated"] and tag.actor.assurance == "claimed"

    # One more commit: exactly one new event. Then nothing.
    new = _commit(path, "app.yaml", "replicas: 5\n", "scale more", "2026-01-02T10:00:00Z")
    second = _causelog(stack, "ingest", "git", str(path), "--scope", "acme")
    assert second.returncode == 0, second.stderr
    assert "1 records -> 1 events" in second.stderr, second.stderr
    third = _causelog(stack, "ingest", "git", str(path), "--scope", "acme")
    assert third.returncode == 0 and "0 records" in third.stderr, third.stderr

    events = _events(stack, 7)
    assert len(events) == 7 and len({e.id for e in events}) == 7
    assert events[-1].raw["sha"] == new and events[-1].links == (f"commit:{new}",)


def test_not_a_repository_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    out = _causelog(stack, "ingest", "git", str(plain))
    assert out.returncode == 2 and "is not a git repository" in " ".join(out.stderr.split()), out.stderr
