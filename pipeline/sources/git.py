"""git repositories -> change events: commits on every branch, merges and tags.

``fetch_records(location, cursor, home=...)`` (I/O) runs ``git`` on a local repository, or on a
bare mirror of a URL kept under ``$CAUSELOG_HOME/git/<hash>`` (fetched with ``--prune`` on
every run), and yields one :class:`~pipeline.sources.runner.RawRecord` per new commit, then one
per new or moved tag. ``to_events(record, scope=..., repo=...)`` (pure) maps one parsed record to
one envelope.

What is read
------------
- Commits reachable from ``refs/heads``, ``refs/remotes``, ``refs/tags`` and ``HEAD`` (not
  ``refs/notes``, ``refs/stash`` or a hosting service's ``refs/pull``), parents before children
  (``git log --topo-order --reverse``), merges included. Per commit: sha, parents, author and
  committer (name, e-mail, strict ISO date), the full message (cut at 64 KiB), files changed with
  their status (``--name-status -M``: ``A``/``M``/``D``/``T``, ``R<score>`` with ``old_path``; at
  most 1000 entries, ``files_total`` gives the real count), refs pointing at it (``%D``), and the
  signature (``%G?`` status, ``%GS`` signer, ``%GK`` key, ``%GF``/``%GP`` fingerprints).
- A merge's files are its diff against its **first parent** (``--diff-merges=first-parent``):
  what the merge brought into the branch it was merged into. A root commit lists every file.
- Tags (``git for-each-ref refs/tags``): annotated (tagger, message, target) or lightweight (no
  tagger); a signed annotated tag is checked with ``git verify-tag``.
- ``%G?`` makes git run ``gpg``/``ssh-keygen`` once per signed commit: the first run over a
  history with many signed commits is slower.
- SSH signatures need ``gpg.ssh.allowedSignersFile``; when neither the repository nor the
  caller (``allowed_signers=``) configures one, an empty file is used, so a signed commit reads as
  ``U`` (good signature, unknown signer) instead of git's misleading ``N``. GPG uses the caller's
  keyring (``GNUPGHOME``).

Cursor
------
``{"v": 1, "base": [sha...], "heads": [sha...], "tags": {"refs/tags/<name>": "<object sha>"}}``.
New commits are ``git log <current tips> --not <base + heads>``: ``base`` is the set of ref tips
of the previous complete run and ``heads`` the newest commits emitted by an unfinished run (every
commit is emitted after its parents, so ``base + heads`` reach exactly what was emitted). The
cursor stays the size of the number of refs, never of the history. A force-push or rebase simply
shows up as the new commits (old ones are not re-emitted while their objects exist; a cursor sha
that was garbage-collected is dropped, and commits only it excluded are emitted again -- same
event ids, so harmless downstream). Deleted branches and tags produce no event. A tag is emitted
when its name is new or it points at a new object (re-tagged).

Envelope
--------
- type ``git.commit``, or ``git.merge`` for a commit with two or more parents; ``git.tag`` for tags.
  action ``commit``/``merge``/``tag``; outcome ``success``.
- links: ``commit:<sha>``. A merge also links each *merged* parent (second and later), so the
  merge joins the chain of the branch it merged; not the first parent, which would chain the
  whole mainline into one component. A tag links ``commit:<target>``.
- actor: the author (tagger for annotated tags): id ``git:<lower-cased e-mail>``, principal the
  e-mail as written, display the name; kind ``service`` for bot-like identities (``[bot]``,
  ``-bot``, ``noreply@github.com``, dependabot/renovate/github-actions...), else ``human``.
  Assurance ``claimed``, ``verified: false`` (anyone can write any name into a commit), except:
  ``signed`` + ``verified: true`` when the signature status is ``G`` (good, trusted key) **and**
  the signer identity (``%GS``: the allowed-signers principal or the GPG user id) names the
  author's e-mail. ``U`` (good signature by a key nobody vouched for), ``X``/``Y`` (expired),
  ``R`` (revoked), ``B`` (bad), ``E`` (cannot check) and a good signature by someone other than
  the author all stay ``claimed``: a signature never raises assurance it did not prove. The status
  is in ``raw.signature`` either way. A lightweight tag has no author: actor ``git:unknown``,
  kind ``unknown``, assurance ``none``.
- time: the **committer** date (when the commit entered history; the author date of a rebased
  or cherry-picked commit can be years older and stays in ``raw.author.date``). Tags: the tagger
  date, or for lightweight tags the target commit's committer date.
- target: ``{kind: "repo", id: <repo>, name: <last path segment>}`` for commits;
  ``{kind: "tag", id: "<repo>@<tag>", name: <tag>}`` for tags. ``subject``: the message's first
  line (commits), the tag name (tags).
- id: ``event_id("git", repo, sha)`` for commits, ``event_id("git", repo, "tag", ref, object)``
  for tags; ``source`` ``git://<repo without scheme>``; ``source_seq`` the sha (or tag object);
  ``raw`` the parsed record through :func:`~pipeline.sources.redact.redact`.

``repo`` is a URL without credentials and without a trailing ``.git``
(:func:`repo_identity`): the ``origin`` remote of a local repository when it has one (so a local
checkout and the URL yield the same event ids), else the repository's absolute path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from pipeline.errors import SourceError
from pipeline.model import Event, event_id
from pipeline.sources._normalize import build, fail, need, parse_time, require_dict
from pipeline.sources.redact import redact
from pipeline.sources.runner import RawRecord

__all__ = [
    "MAX_FILES",
    "MAX_MESSAGE",
    "fetch_records",
    "is_url",
    "parse_log",
    "repo_identity",
    "resolve",
    "to_events",
]

MAX_MESSAGE = 64 * 1024
MAX_FILES = 1000

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SCP = re.compile(r"^(?:[^@/\s]+@)?[A-Za-z0-9.-]+:(?!//)[^\s]*$")
_EMAIL = re.compile(r"[^\s<>]+@[^\s<>]+")
_BOT = re.compile(
    r"\[bot\]|(?:^|[-_.+\s])bot(?:$|[-_.+@\s])|^noreply@github\.com$|dependabot|renovate|github-actions"
    r"|greenkeeper|snyk-bot|semantic-release",
    re.I,
)

# One commit in `git log -z` output: RS, fields separated by US, the message last, then GS NUL.
_FIELDS = ("sha", "parents", "author_name", "author_email", "author_date", "committer_name",
           "committer_email", "committer_date", "sig_status", "sig_signer", "sig_key",
           "sig_fingerprint", "sig_primary", "refs", "message")  # fmt: skip
_FORMAT = "%x1e" + "%x1f".join(
    ["%H", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%G?", "%GS", "%GK", "%GF", "%GP", "%D", "%B"]
) + "%x1d"
_TAG_FORMAT = "%00".join(
    ["%(refname)", "%(objectname)", "%(objecttype)", "%(*objectname)", "%(*objecttype)", "%(taggername)",
     "%(taggeremail)", "%(taggerdate:iso-strict)", "%(creatordate:iso-strict)", "%(contents:signature)",
     "%(contents)"]
) + "%00%1e"  # fmt: skip
_STATUS = re.compile(r"[ACDMRTUXB][0-9]*")


# --------------------------------------------------------------------------------------------
# locations and identity


def is_url(location: str) -> bool:
    """Whether ``location`` names a remote (``https://``, ``ssh://``, ``file://``, ``user@host:path``)."""
    if _URL.match(location):
        return True
    return bool(_SCP.match(location)) and not Path(location).exists()


def _strip_credentials(url: str) -> str:
    if _URL.match(url):
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        # ssh user names (git@) are not secrets, but https user names are often tokens: drop all.
        clean = urlunsplit((parts.scheme, host, parts.path, "", ""))
    else:  # scp-like user@host:path
        clean = url.split("@", 1)[1] if "@" in url.split(":", 1)[0] else url
    clean = clean.rstrip("/")
    return clean[:-4] if clean.endswith(".git") else clean


def repo_identity(location: str, origin_url: str | None = None) -> str:
    """The repository's name in events: a URL without credentials and ``.git``, else an absolute path."""
    if is_url(location):
        return _strip_credentials(location)
    if origin_url:
        return _strip_credentials(origin_url) if is_url(origin_url) else str(Path(origin_url).resolve())
    return str(Path(location).resolve())


def _source_of(repo: str) -> str:
    return "git://" + _URL.sub("", repo).lstrip("/") if _URL.match(repo) else "git://" + repo


# --------------------------------------------------------------------------------------------
# running git


def _git(args: Sequence[str], *, cwd: Path | None = None, config: Sequence[str] = (), check: bool = True,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = ["git", *(x for kv in config for x in ("-c", kv)), *args]
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True)
    except FileNotFoundError:
        raise SourceError("git is not installed (or not on PATH); the git source needs it") from None
    if check and proc.returncode != 0:
        what = " ".join(args[:2])
        raise SourceError(f"git {what} failed in {cwd}: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def resolve(location: str, home: Path) -> tuple[Path, str]:
    """The directory to read and the repository identity; clones or fetches a URL into a mirror."""
    if is_url(location):
        repo = repo_identity(location)
        mirror = home / "git" / hashlib.sha256(repo.encode()).hexdigest()[:16]
        if not (mirror / "HEAD").exists():
            tmp = mirror.with_name(mirror.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            _git(["init", "--bare", "--quiet", str(tmp)])
            _git(["remote", "add", "origin", location], cwd=tmp)
            _git(["config", "--replace-all", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"], cwd=tmp)
            _git(["config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*"], cwd=tmp)
            _fetch(tmp, location)
            tmp.rename(mirror)
        else:
            _fetch(mirror, location)
        return mirror, repo
    path = Path(location)
    if not path.exists():
        raise SourceError(f"{location}: no such directory (and not a git URL)")
    proc = _git(["rev-parse", "--git-dir"], cwd=path, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()
        raise SourceError(f"{location} is not a git repository ({why})")
    origin = _git(["config", "--get", "remote.origin.url"], cwd=path, check=False).stdout.decode().strip()
    return path, repo_identity(location, origin or None)


def _fetch(mirror: Path, location: str) -> None:
    proc = _git(["fetch", "--prune", "--quiet", "origin"], cwd=mirror, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()
        raise SourceError(f"cannot fetch {_strip_credentials(location)}: {why}")


def _tips(path: Path) -> list[str]:
    """Commit shas at the tips of branches, remote-tracking branches, tags (peeled) and HEAD."""
    out = _git(["for-each-ref", "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype)",
                "refs/heads", "refs/remotes", "refs/tags"], cwd=path).stdout.decode()
    tips: set[str] = set()
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) >= 2 and parts[1] == "commit":
            tips.add(parts[0])
        elif len(parts) >= 4 and parts[3] == "commit":
            tips.add(parts[2])
    head = _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], cwd=path, check=False)
    if head.returncode == 0:
        tips.add(head.stdout.decode().strip())
    return sorted(tips)


def _existing(path: Path, shas: Sequence[str]) -> list[str]:
    """The shas that are commits in the repository (a gc'ed or foreign sha is dropped)."""
    good = [s for s in shas if isinstance(s, str) and _SHA.fullmatch(s)]
    if not good:
        return []
    proc = _git(["cat-file", "--batch-check=%(objectname) %(objecttype)"], cwd=path,
                input="\n".join(good).encode() + b"\n")
    ok = set()
    for line in proc.stdout.decode().splitlines():
        parts = line.split(" ")
        if len(parts) == 2 and parts[1] == "commit":
            ok.add(parts[0])
    return [s for s in good if s in ok]


def _signing_config(path: Path, allowed_signers: Path | None, home: Path) -> list[str]:
    if allowed_signers is not None:
        return [f"gpg.ssh.allowedSignersFile={allowed_signers.resolve()}"]
    configured = _git(["config", "--get", "gpg.ssh.allowedSignersFile"], cwd=path, check=False).stdout.strip()
    if configured:
        return []
    empty = home / "git" / "allowed_signers.empty"
    empty.parent.mkdir(parents=True, exist_ok=True)
    if not empty.exists():
        empty.write_bytes(b"")
    return [f"gpg.ssh.allowedSignersFile={empty}"]


# --------------------------------------------------------------------------------------------
# parsing `git log` output


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _chunks_split(stream: IO[bytes], sep: bytes = b"\0", size: int = 1 << 16) -> Iterator[bytes]:
    buf = b""
    while True:
        chunk = stream.read(size)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(sep)
        yield from done
    if buf:
        yield buf


def _header(token: bytes) -> dict[str, Any]:
    body = token[1:-1]  # RS ... GS
    values = body.split(b"\x1f", len(_FIELDS) - 1)
    if len(values) != len(_FIELDS):
        return {"kind": "commit", "malformed": f"expected {len(_FIELDS)} fields, got {len(values)}",
                "sha": _text(values[0]) if values else ""}
    f = dict(zip(_FIELDS, (_text(v) for v in values), strict=True))
    message = f["message"]
    truncated = len(message) > MAX_MESSAGE
    if truncated:
        message = message[:MAX_MESSAGE]
    lines = message.strip().splitlines()
    return {
        "kind": "commit",
        "sha": f["sha"],
        "parents": f["parents"].split(),
        "author": {"name": f["author_name"], "email": f["author_email"], "date": f["author_date"]},
        "committer": {"name": f["committer_name"], "email": f["committer_email"], "date": f["committer_date"]},
        "summary": lines[0][:200] if lines else "",
        "message": message,
        "message_truncated": truncated,
        "refs": [r.strip() for r in f["refs"].split(",") if r.strip()],
        "signature": {
            "status": f["sig_status"] or "N",
            "signer": f["sig_signer"],
            "key": f["sig_key"],
            "fingerprint": f["sig_fingerprint"],
            "primary_fingerprint": f["sig_primary"],
        },
        "files": [],
        "files_total": 0,
    }


def parse_log(tokens: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Commits from the NUL-split output of ``git log -z --name-status --format=<_FORMAT>``.

    Each commit is a header token (RS fields... GS) followed by name-status tokens: a status
    (``M``, ``R100``...) and one path, or two (old, new) for renames and copies.
    """
    current: dict[str, Any] | None = None
    it = iter(tokens)
    for token in it:
        t = token.lstrip(b"\n")
        if not t:
            continue
        if t.startswith(b"\x1e"):
            if current is not None:
                yield current
            current = _header(t) if t.endswith(b"\x1d") else {
                "kind": "commit", "malformed": "unterminated commit header", "sha": _text(t[1:41])}
            current["files_base"] = ("first-parent" if len(current.get("parents", ())) > 1
                                     else "parent" if current.get("parents") else "root")
            continue
        status = _text(t)
        if current is None or not _STATUS.fullmatch(status):
            if current is not None:
                current.setdefault("malformed", f"unexpected name-status token {status[:40]!r}")
            continue
        entry: dict[str, Any] = {"status": status}
        if status[0] in "RC":
            entry["old_path"] = _text(next(it, b""))
        entry["path"] = _text(next(it, b""))
        current["files_total"] += 1
        if len(current["files"]) < MAX_FILES:
            current["files"].append(entry)
    if current is not None:
        yield current


# --------------------------------------------------------------------------------------------
# tags


def _tag_records(path: Path, config: Sequence[str]) -> list[dict[str, Any]]:
    out = _git(["for-each-ref", f"--format={_TAG_FORMAT}", "refs/tags"], cwd=path).stdout
    records = []
    for item in out.split(b"\0\x1e"):
        item = item.lstrip(b"\n")
        if not item:
            continue
        v = [_text(x) for x in item.split(b"\0")]
        if len(v) < 11:
            continue
        ref, obj, otype, peeled, ptype, tname, temail, tdate, cdate, signature = v[:10]
        contents = "\0".join(v[10:])
        annotated = otype == "tag"
        target, ttype = (peeled, ptype) if annotated else (obj, otype)
        message = contents[: len(contents) - len(signature)] if signature and contents.endswith(signature) \
            else contents
        rec: dict[str, Any] = {
            "kind": "tag",
            "ref": ref,
            "name": ref.removeprefix("refs/tags/"),
            "object": obj,
            "annotated": annotated,
            "target": target,
            "target_type": ttype,
            "date": tdate or cdate,
        }
        if annotated:
            rec["tagger"] = {"name": tname, "email": temail.strip("<>"), "date": tdate}
            rec["message"] = message[:MAX_MESSAGE]
            rec["summary"] = (message.strip().splitlines() or [""])[0][:200]
            rec["signature"] = _verify_tag(path, ref, config) if signature else {"status": "N"}
        records.append(rec)
    return records


def _verify_tag(path: Path, ref: str, config: Sequence[str]) -> dict[str, Any]:
    """Signature status of a signed tag, in ``%G?`` letters (G, U, B, E) from ``git verify-tag``."""
    proc = _git(["verify-tag", "--raw", ref], cwd=path, config=config, check=False)
    text = _text(proc.stderr + proc.stdout)
    signer, key = "", ""
    if m := re.search(r'Good "git" signature for (\S+) with \S+ key (\S+)', text):  # ssh, trusted principal
        signer, key = m.group(1), m.group(2)
        status = "G"
    elif m := re.search(r"\[GNUPG:\] GOODSIG (\S+) (.*)", text):
        key, signer = m.group(1), m.group(2).strip()
        status = "G" if re.search(r"TRUST_(FULLY|ULTIMATE)", text) else "U"
    elif re.search(r"Good \"git\" signature with \S+ key (\S+)", text):
        status = "U"
        key = re.search(r"key (\S+)", text).group(1)  # type: ignore[union-attr]
    elif re.search(r"BADSIG|Signature verification failed|incorrect signature", text, re.I):
        status = "B"
    else:
        status = "E"
    return {"status": status, "signer": signer, "key": key, "detail": text.strip()[:500]}


# --------------------------------------------------------------------------------------------
# fetch


def _cursor(base: Sequence[str], heads: Sequence[str], tags: dict[str, str]) -> dict[str, Any]:
    return {"v": 1, "base": base, "heads": heads, "tags": tags}


def fetch_records(
    location: str,
    cursor: dict[str, Any] | None,
    *,
    home: Path,
    allowed_signers: Path | None = None,
) -> Iterator[RawRecord]:
    """New commits (parents first) and new or moved tags since ``cursor`` (see the module doc)."""
    path, repo = resolve(location, home)
    yield from _fetch_from(path, repo, cursor, home=home, allowed_signers=allowed_signers)


def _fetch_from(path: Path, repo: str, cursor: dict[str, Any] | None, *, home: Path,
                allowed_signers: Path | None) -> Iterator[RawRecord]:
    cursor = cursor if isinstance(cursor, dict) and cursor.get("v") == 1 else {}
    old_tags: dict[str, str] = dict(cursor.get("tags") or {})
    tips = _tips(path)
    exclude = _existing(path, [*cursor.get("base", ()), *cursor.get("heads", ())])
    base = sorted(set(exclude))
    config = _signing_config(path, allowed_signers, home)

    base_set = set(base)

    def records() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        heads: set[str] = set()
        if tips:
            with tempfile.TemporaryFile() as revs:
                revs.write("".join(f"{t}\n" for t in tips).encode())
                revs.write("".join(f"^{s}\n" for s in exclude).encode())
                revs.seek(0)
                cmd = ["git", *(x for kv in config for x in ("-c", kv)), "log", "--stdin", "--topo-order",
                       "--reverse", "-z", "--name-status", "-M", "--diff-merges=first-parent",
                       "--no-abbrev", "--decorate=full", f"--format={_FORMAT}"]
                env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
                with tempfile.TemporaryFile() as errs:
                    try:
                        proc = subprocess.Popen(cmd, cwd=path, env=env, stdin=revs, stdout=subprocess.PIPE,
                                                stderr=errs)
                    except FileNotFoundError:
                        raise SourceError("git is not installed (or not on PATH)") from None
                    assert proc.stdout is not None
                    try:
                        for commit in parse_log(_chunks_split(proc.stdout)):
                            heads.difference_update(commit.get("parents", ()))
                            if commit.get("sha"):
                                heads.add(commit["sha"])
                            yield commit, _cursor(base, sorted(heads - base_set), old_tags)
                    finally:
                        proc.stdout.close()
                        rc = proc.wait()
                    if rc != 0:
                        errs.seek(0)
                        raise SourceError(f"git log failed in {path}: {_text(errs.read()).strip()}")
        tags = dict(old_tags)
        for tag in _tag_records(path, config):
            if tags.get(tag["ref"]) == tag["object"]:
                continue
            tags[tag["ref"]] = tag["object"]
            yield tag, _cursor(tips, [], dict(tags))

    # Hold one record back so the last one carries the compact end-of-run cursor: the tips.
    pending: tuple[dict[str, Any], dict[str, Any]] | None = None
    for item in records():
        if pending is not None:
            yield _record(pending[0], pending[1], repo)
        pending = item
    if pending is not None:
        yield _record(pending[0], _cursor(tips, [], dict(pending[1]["tags"])), repo)


def _record(payload: dict[str, Any], cursor: dict[str, Any], repo: str) -> RawRecord:
    payload = {**payload, "repo": repo}
    ident = payload.get("sha") or f"{payload.get('ref')}@{payload.get('object')}"
    return RawRecord(payload=payload, cursor=cursor, origin=f"{repo}:{ident}",
                     original=orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS))


# --------------------------------------------------------------------------------------------
# to_events (pure)


def _is_bot(name: str, email: str) -> bool:
    return bool(_BOT.search(name) or _BOT.search(email))


def _person_actor(person: dict[str, Any], field: str, signature: dict[str, Any] | None) -> dict[str, Any]:
    name = _str(person.get("name"))
    email = _str(person.get("email"))
    if not email and not name:
        raise fail("missing_field", "neither a name nor an e-mail", field)
    ident = (email or name).strip().lower()
    signed = _good_signature_by(signature, email)
    return {
        "id": f"git:{ident}"[:1024],
        "display": name or email,
        "kind": "service" if _is_bot(name, email) else "human",
        "principal": email or name,
        "verified": signed,
        "assurance": "signed" if signed else "claimed",
    }


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _good_signature_by(signature: dict[str, Any] | None, email: str) -> bool:
    """A ``G`` signature whose signer identity names ``email`` (the allowed-signers principal or GPG uid)."""
    if not isinstance(signature, dict) or signature.get("status") != "G" or not email:
        return False
    signer = signature.get("signer")
    if not isinstance(signer, str) or not signer.strip():
        return False
    names = {m.lower() for m in _EMAIL.findall(signer)} | {signer.strip().lower()}
    names = {n.strip("<>") for n in names}
    return email.strip().lower() in names


def _time(candidates: list[tuple[str, Any]]) -> Any:
    for _field, value in candidates:
        t = parse_time(value) if isinstance(value, str) and value else None
        if t is not None and 1970 <= t.year < 2200:
            return t
    fields = ", ".join(f for f, _ in candidates)
    raise fail("missing_field", f"no usable date in {fields}", candidates[0][0] if candidates else "$")


def _repo_name(repo: str) -> str:
    return repo.rstrip("/").replace(":", "/").rsplit("/", 1)[-1] or repo


def to_events(record: Any, *, scope: str, repo: str | None = None) -> list[Event]:
    """One envelope for one parsed commit or tag record (see the module doc)."""
    record = require_dict(record, "$", "a parsed git record")
    if repo is None:
        repo = need(record, "repo")
    if record.get("malformed"):
        raise fail("invalid_value", f"unparseable git log output: {record['malformed']}", "$", record.get("sha"))
    kind = need(record, "kind")
    if kind == "commit":
        fields = _commit_fields(record, repo)
    elif kind == "tag":
        fields = _tag_fields(record, repo)
    else:
        raise fail("invalid_value", "expected `commit` or `tag`", "$.kind", kind)
    envelope = {
        "source": _source_of(repo),
        "scope": scope,
        "outcome": "success",
        "raw": redact(record),
        **fields,
    }
    return [build(envelope)]


def _commit_fields(record: dict[str, Any], repo: str) -> dict[str, Any]:
    sha = need(record, "sha")
    if not _SHA.fullmatch(sha):
        raise fail("invalid_value", "not a commit sha", "$.sha", sha)
    parents = record.get("parents") or []
    if not isinstance(parents, list) or not all(isinstance(p, str) and _SHA.fullmatch(p) for p in parents):
        raise fail("invalid_value", "parents must be a list of commit shas", "$.parents", parents)
    author = need(record, "author", kind=dict)
    committer: dict[str, Any] = record["committer"] if isinstance(record.get("committer"), dict) else {}
    merge = len(parents) > 1
    signature = record.get("signature") if isinstance(record.get("signature"), dict) else None
    summary = _str(record.get("summary"))
    fields: dict[str, Any] = {
        "id": event_id("git", repo, sha),
        "type": "git.merge" if merge else "git.commit",
        "action": "merge" if merge else "commit",
        "time": _time([("$.committer.date", committer.get("date")), ("$.author.date", author.get("date"))]),
        "actor": _person_actor(author, "$.author", signature),
        "target": {"kind": "repo", "id": repo, "name": _repo_name(repo)},
        "links": [f"commit:{sha}", *(f"commit:{p}" for p in parents[1:])],
        "source_seq": sha,
    }
    if summary.strip():
        fields["subject"] = summary.strip()
    return fields


def _tag_fields(record: dict[str, Any], repo: str) -> dict[str, Any]:
    ref = need(record, "ref")
    name = record.get("name") if isinstance(record.get("name"), str) and record.get("name") else ref
    obj = need(record, "object")
    target = record.get("target")
    links = [f"commit:{target}"] if record.get("target_type") == "commit" and isinstance(target, str) \
        and _SHA.fullmatch(target) else []
    tagger = record.get("tagger")
    if record.get("annotated") and isinstance(tagger, dict) and (tagger.get("email") or tagger.get("name")):
        signature = record.get("signature") if isinstance(record.get("signature"), dict) else None
        actor = _person_actor(tagger, "$.tagger", signature)
        when = _time([("$.tagger.date", tagger.get("date")), ("$.date", record.get("date"))])
    else:
        actor = {"id": "git:unknown", "kind": "unknown", "assurance": "none", "verified": False,
                 "display": "", "principal": ""}
        when = _time([("$.date", record.get("date"))])
    return {
        "id": event_id("git", repo, "tag", ref, obj),
        "type": "git.tag",
        "action": "tag",
        "time": when,
        "actor": actor,
        "target": {"kind": "tag", "id": f"{repo}@{name}", "name": name},
        "links": links,
        "subject": name,
        "source_seq": obj,
    }
