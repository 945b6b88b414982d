"""git source: the `git log` parser on crafted output, to_events, and fetch on small real repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import DecodeError, SourceError
from pipeline.model import decode, encode
from pipeline.sources import git

A = "a" * 40
B = "b" * 40
C = "c" * 40
REPO = "https://github.com/acme/app"


def _header(sha: str, parents: str = "", status: str = "N", signer: str = "", message: str = "subject\n\nbody\n",
            email: str = "alice@example.com", name: str = "Alice") -> bytes:
    fields = [sha, parents, name, email, "2026-01-01T10:00:00+01:00", "Carol", "carol@example.com",
              "2026-01-02T10:00:00+00:00", status, signer, "SHA256:k" if status != "N" else "", "", "",
              "HEAD -> refs/heads/main", message]
    return b"\x1e" + "\x1f".join(fields).encode() + b"\x1d"


def _parse(data: bytes) -> list[dict[str, Any]]:
    return list(git.parse_log(iter(data.split(b"\0"))))


def _commit(**kw: Any) -> dict[str, Any]:
    [rec] = _parse(_header(kw.pop("sha", A), **kw) + b"\0\nM\0app.yaml\0")
    return rec


# ---------------------------------------------------------------------------------------- parser


def test_parser_reads_headers_files_renames_and_empty_commits() -> None:
    out = (_header(A) + b"\0\nA\0a.txt\0R087\0old name.txt\0new name.txt\0"
           + _header(B, A) + b"\0"  # an empty commit: no files
           + _header(C, f"{A} {B}", message="merge\x1f with a unit separator\n") + b"\0\nD\0gone\0")
    recs = _parse(out)
    assert [r["sha"] for r in recs] == [A, B, C]
    assert recs[0]["files"] == [{"status": "A", "path": "a.txt"},
                                {"status": "R087", "old_path": "old name.txt", "path": "new name.txt"}]
    assert recs[0]["files_base"] == "root" and recs[1]["files_base"] == "parent"
    assert recs[1]["files"] == [] and recs[1]["parents"] == [A]
    assert recs[2]["parents"] == [A, B] and recs[2]["files_base"] == "first-parent"
    assert recs[2]["message"] == "merge\x1f with a unit separator\n"
    assert recs[0]["summary"] == "subject" and recs[0]["refs"] == ["HEAD -> refs/heads/main"]
    assert recs[0]["author"] == {"name": "Alice", "email": "alice@example.com", "date": "2026-01-01T10:00:00+01:00"}
    assert recs[0]["committer"]["email"] == "carol@example.com"


def test_parser_caps_files_and_messages() -> None:
    files = b"".join(b"M\0f%d\0" % i for i in range(git.MAX_FILES + 5))
    [rec] = _parse(_header(A, message="x" * (git.MAX_MESSAGE + 10)) + b"\0\n" + files)
    assert len(rec["files"]) == git.MAX_FILES and rec["files_total"] == git.MAX_FILES + 5
    assert rec["message_truncated"] and len(rec["message"]) == git.MAX_MESSAGE


def test_malformed_header_goes_to_the_dlq_not_a_crash() -> None:
    [rec] = _parse(b"\x1e" + A.encode() + b"\x1fonly two fields\x1d\0")
    assert "malformed" in rec
    with pytest.raises(DecodeError) as exc:
        git.to_events(rec, scope="acme", repo=REPO)
    assert exc.value.reason == "invalid_value"


# ---------------------------------------------------------------------------------------- to_events


def test_unsigned_commit_is_claimed_by_the_author_at_committer_time() -> None:
    [e] = git.to_events(_commit(), scope="acme", repo=REPO)
    assert e.type == "git.commit" and e.action == "commit" and e.outcome == "success"
    assert e.actor.id == "git:alice@example.com" and e.actor.display == "Alice" and e.actor.kind == "human"
    assert (e.actor.assurance, e.actor.verified) == ("claimed", False)
    assert e.time.isoformat() == "2026-01-02T10:00:00+00:00"  # committer date
    assert e.links == (f"commit:{A}",) and e.subject == "subject"
    assert e.target.kind == "repo" and e.target.id == REPO and e.target.name == "app"
    assert e.source == "git://github.com/acme/app" and e.source_seq == A
    assert e.raw["committer"]["name"] == "Carol" and e.raw["files"] == [{"status": "M", "path": "app.yaml"}]
    assert decode(encode(e)) == e
    assert git.to_events(_commit(), scope="acme", repo=REPO)[0].id == e.id  # deterministic


def test_good_signature_by_the_author_is_signed() -> None:
    [e] = git.to_events(_commit(status="G", signer="alice@example.com"), scope="acme", repo=REPO)
    assert (e.actor.assurance, e.actor.verified) == ("signed", True)
    [gpg] = git.to_events(_commit(status="G", signer="Alice A <Alice@Example.com>"), scope="acme", repo=REPO)
    assert gpg.actor.assurance == "signed"


@pytest.mark.parametrize("status", ["B", "U", "X", "Y", "R", "E", "N"])
def test_anything_but_a_good_trusted_signature_stays_claimed(status: str) -> None:
    [e] = git.to_events(_commit(status=status, signer="alice@example.com"), scope="acme", repo=REPO)
    assert (e.actor.assurance, e.actor.verified) == ("claimed", False)
    assert e.raw["signature"]["status"] == status


def test_good_signature_by_someone_else_does_not_vouch_for_the_author() -> None:
    [e] = git.to_events(_commit(status="G", signer="mallory@example.com"), scope="acme", repo=REPO)
    assert e.actor.assurance == "claimed" and e.raw["signature"]["signer"] == "mallory@example.com"


def test_merge_links_itself_and_the_merged_parents_not_the_mainline() -> None:
    [e] = git.to_events(_commit(sha=C, parents=f"{A} {B}"), scope="acme", repo=REPO)
    assert e.type == "git.merge" and e.action == "merge"
    assert e.links == (f"commit:{C}", f"commit:{B}")


@pytest.mark.parametrize(("name", "email"), [
    ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"),
    ("Renovate Bot", "bot@renovateapp.com"),
    ("github-actions", "41898282+github-actions[bot]@users.noreply.github.com"),
    ("release-bot", "ci@example.com"),
])
def test_bot_authors_are_services(name: str, email: str) -> None:
    [e] = git.to_events(_commit(name=name, email=email), scope="acme", repo=REPO)
    assert e.actor.kind == "service"


def test_secrets_in_messages_are_redacted() -> None:
    [e] = git.to_events(_commit(message="oops\n\npassword=hunter2hunter2\n"), scope="acme", repo=REPO)
    assert "hunter2" not in encode(e).decode() and "redacted:hmac-sha256:v1:" in e.raw["message"]


def _tag(**kw: Any) -> dict[str, Any]:
    rec = {"kind": "tag", "ref": "refs/tags/v1", "name": "v1", "object": B, "annotated": True, "target": A,
           "target_type": "commit", "date": "2026-01-03T00:00:00+00:00",
           "tagger": {"name": "Alice", "email": "alice@example.com", "date": "2026-01-03T00:00:00+00:00"},
           "message": "release\n", "summary": "release", "signature": {"status": "N"}, "repo": REPO}
    rec.update(kw)
    return rec


def test_annotated_tag_links_its_commit() -> None:
    [e] = git.to_events(_tag(), scope="acme")
    assert e.type == "git.tag" and e.links == (f"commit:{A}",) and e.subject == "v1"
    assert e.target.kind == "tag" and e.target.id == f"{REPO}@v1"
    assert e.actor.id == "git:alice@example.com" and e.actor.assurance == "claimed"
    [signed] = git.to_events(_tag(signature={"status": "G", "signer": "alice@example.com"}), scope="acme")
    assert signed.actor.assurance == "signed"
    # Re-tagging (a new tag object) is a new event; the same tag is the same event.
    assert git.to_events(_tag(object=C), scope="acme")[0].id != e.id
    assert git.to_events(_tag(), scope="acme")[0].id == e.id


def test_lightweight_tag_has_no_actor() -> None:
    [e] = git.to_events(_tag(annotated=False, object=A, tagger=None), scope="acme")
    assert (e.actor.id, e.actor.kind, e.actor.assurance) == ("git:unknown", "unknown", "none")
    assert e.links == (f"commit:{A}",)


def test_bad_records_raise_decode_errors() -> None:
    with pytest.raises(DecodeError):
        git.to_events({"kind": "commit", "sha": "nope", "author": {}}, scope="a", repo=REPO)
    with pytest.raises(DecodeError):
        git.to_events({**_commit(), "author": {"name": "", "email": ""}}, scope="a", repo=REPO)
    with pytest.raises(DecodeError):
        git.to_events({**_commit(), "committer": {}, "author": {"name": "x", "date": "never"}}, scope="a",
                      repo=REPO)
    with pytest.raises(DecodeError):
        git.to_events("not a dict", scope="a", repo=REPO)


def test_repo_identity_drops_credentials_and_dot_git() -> None:
    assert git.repo_identity("https://x-access-token:ghp_secret@github.com/acme/app.git") == REPO
    assert git.repo_identity("git@github.com:acme/app.git") == "github.com:acme/app"
    assert git.repo_identity("ssh://git@host:2222/acme/app.git/") == "ssh://host:2222/acme/app"
    assert git.repo_identity("/srv/repo", "https://tok@github.com/acme/app") == REPO
    assert git.is_url("file:///srv/repo") and not git.is_url("/srv/repo")


# ---------------------------------------------------------------------------------------- fetch (real git)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _run(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_SYSTEM="/dev/null",
               GIT_AUTHOR_NAME="Bob", GIT_AUTHOR_EMAIL="bob@example.com", GIT_COMMITTER_NAME="Bob",
               GIT_COMMITTER_EMAIL="bob@example.com")
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _make(tmp_path: Path) -> Path:
    r = tmp_path / "r"
    r.mkdir()
    _run(r, "init", "-q", "-b", "main")
    for i in range(3):
        (r / "f").write_text(str(i))
        _run(r, "add", "f")
        _run(r, "commit", "-q", "-m", f"c{i}")
    _run(r, "tag", "light")
    return r


@needs_git
def test_fetch_resumes_from_any_record_cursor_and_ends_at_the_tips(tmp_path: Path) -> None:
    r = _make(tmp_path)
    home = tmp_path / "home"
    recs = list(git.fetch_records(str(r), None, home=home))
    assert [x.payload.get("summary", x.payload.get("name")) for x in recs] == ["c0", "c1", "c2", "light"]
    assert recs[-1].cursor["base"] == [_run(r, "rev-parse", "HEAD")] and recs[-1].cursor["heads"] == []
    for i, rec in enumerate(recs):  # a run killed after any committed record resumes right after it
        rest = list(git.fetch_records(str(r), rec.cursor, home=home))
        assert [x.origin for x in rest] == [x.origin for x in recs[i + 1:]]
    # A rewritten branch: only the new commit appears.
    _run(r, "commit", "-q", "--amend", "-m", "c2 rewritten")
    [new] = list(git.fetch_records(str(r), recs[-1].cursor, home=home))
    assert new.payload["summary"] == "c2 rewritten"


@needs_git
def test_fetch_mirrors_a_url(tmp_path: Path) -> None:
    r = _make(tmp_path)
    home = tmp_path / "home"
    url = f"file://{r}"
    recs = list(git.fetch_records(url, None, home=home))
    assert len(recs) == 4 and recs[0].payload["repo"] == url
    assert len(list((home / "git").glob("*/HEAD"))) == 1
    (r / "g").write_text("new")
    _run(r, "add", "g")
    _run(r, "commit", "-q", "-m", "later")
    [later] = list(git.fetch_records(url, recs[-1].cursor, home=home))  # fetched into the mirror
    assert later.payload["summary"] == "later" and later.payload["files"] == [{"status": "A", "path": "g"}]


@needs_git
def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a git repository"):
        list(git.fetch_records(str(tmp_path), None, home=tmp_path / "home"))
    with pytest.raises(SourceError, match="no such directory"):
        list(git.fetch_records(str(tmp_path / "missing"), None, home=tmp_path / "home"))
