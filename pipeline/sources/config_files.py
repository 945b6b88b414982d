"""Configuration files in a directory -> ``config.changed`` events (parsers, pure part, fetcher).

``causelog ingest config DIR`` watches a directory tree of YAML (``.yaml``/``.yml``), JSON,
TOML, INI (``.ini``/``.cfg``), dotenv (``.env``, ``.env.<name>``, ``<name>.env``) and Java
``.properties`` files. Other files are ignored, as are ``.git``/``.hg``/``.svn`` directories and
editor temp files (``*.swp``, ``*.swo``, ``*.swx``, ``*~``, ``.#*``, ``#*#``, ``*.tmp``, ``4913``).

**Parsing** (:func:`parse`, pure): YAML with ``safe_load`` (several documents -> a list), JSON,
TOML (``tomllib``), INI with ``configparser`` (no interpolation, keys keep their case, ``[DEFAULT]``
is an ordinary section, keys before any section sit at the top level, a key without value is
``null``), dotenv (``KEY=VALUE``, ``export`` prefix, ``#`` comments, ``'literal'`` and
``"escaped\\n"`` quotes, quoted values may span lines, ``KEY`` alone is ``null``; ``${VAR}`` is
not expanded) and ``.properties`` with the rules of ``java.util.Properties.load`` (``=``, ``:`` or
white space separates, ``#``/``!`` comments, backslash continuation lines, ``\\uXXXX``). The
parsed document is made JSON-safe (:func:`normalise`: keys become strings, dates ISO strings,
non-finite floats and integers beyond 64 bits strings) and limited to 100,000 nodes and depth 64
(a YAML alias bomb is rejected, not expanded). A file that does not parse raises
:class:`~pipeline.errors.DecodeError` with reason ``bad_config`` and a message naming the file,
the format and the line -- never the offending text, which could hold a secret.

**State** lives in the source's cursor, which the runner commits in the same Kafka transaction as
the events, so "before" survives restarts exactly as far as the events went out::

    {"v": 1, "seq": <changes so far>,
     "files": {<relative path>: {"digest": <keyed hash of the bytes>, "fmt": "yaml",
                                 "doc": <parsed document, REDACTED>, "n": <its JSON size>,
                                 "bad": true,  # the current bytes did not parse
                                 "new": true   # ...and no content of it ever did (no event yet)
                                 }}}

Only redacted values are ever stored. ``doc`` is left out for files over 1 MiB
(:data:`MAX_FILE_BYTES`: tracked by digest only; their events carry a digest-only diff, no key
paths), for documents whose redacted JSON exceeds 64 KiB (:data:`MAX_DOC_BYTES`) and once the
cursor would pass 3 MiB (:data:`MAX_STATE_BYTES`: entries at about 120 bytes plus path per file,
and the documents; the cursor topic takes 4 MiB records). A tree so large that the entries alone
would pass it (about 25,000 files) is refused with a SourceError: watch subdirectories instead. The next change of such a file is diffed with ``before_known: false`` (every path of
the new document is listed). An unparseable file records its new digest (``bad``) and keeps its
last good document: it goes to the DLQ **once** per content, not on every poll, and when it is
fixed the diff runs from the last good state.

**Fetching** (:func:`fetch_changes`, I/O): one scan walks the tree in sorted order and yields a
:class:`~pipeline.sources.runner.RawRecord` per file whose digest differs from the cursor (added,
changed) or that disappeared (deleted). The record's ``cursor`` is the cursor dict itself, updated
in place *before* the record is yielded: when the runner serialises it (at a chunk commit, between
two records) it holds exactly the records handed out so far. This avoids copying the whole state
per file; it relies on the runner serialising ``rec.cursor`` before it asks for the next record,
which :func:`~pipeline.sources.runner.run_source` does. A process-local stat cache (inode, size,
mtime) skips re-reading unchanged files in follow mode; a file whose mtime was within 2 s of when
it was read is re-read next time (same-second edits are not missed). The first scan is the
backfill: every file is a ``create`` from nothing.

**Attribution** (I/O, in the fetcher): when DIR is in a git work tree and the file is tracked and
clean (``git status`` shows no change), the actor is the author of the last commit touching it
(``git:<email>``, assurance ``claimed``, link ``commit:<sha>``); the same for a deletion already
committed. Otherwise -- not a repository, an untracked or ignored file, or a working copy that
differs from the last commit -- the actor is the OS user running the watcher
(``os:<user>@<host>``, assurance ``claimed``, kind ``unknown``) and ``raw.attribution.reason``
says why. One ``git log -1`` per changed clean file (one ``git status``/``ls-files`` per scan).

**Events** (:func:`to_events`, pure): one per record, type ``config.changed``, action
``create``/``update``/``delete``; target ``{kind: config.file, id: <dir name>/<relative path>}``;
time = the file's mtime (for a delete: when the scan noticed it); source ``config://<host><DIR>``;
``source_seq`` = the change's number in this source instance (``seq``). Id =
``event_id("config", source, path, seq, new digest)``: a replay from the same cursor yields the
same ids, and a file reverted to an earlier content still gets a new id. ``diff`` is
:func:`~pipeline.sources.diff.structured_diff` of the previous and the new document (secrets
hashed, ``redacted:hmac-sha256:v1:<32 hex>``); ``raw`` = path, format, digests, size, attribution and the
redacted document when its JSON is at most 64 KiB.
"""

from __future__ import annotations

import base64
import configparser
import getpass
import hashlib
import math
import os
import re
import socket
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import orjson
import yaml

from pipeline.errors import DecodeError, SourceError
from pipeline.model import Event, event_id, from_micros
from pipeline.sources import keyed
from pipeline.sources._normalize import build
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact, redact_text
from pipeline.sources.runner import RawRecord

__all__ = [
    "MAX_DOC_BYTES",
    "MAX_FILE_BYTES",
    "MAX_STATE_BYTES",
    "ConfigChange",
    "GitAttribution",
    "fetch_changes",
    "format_of",
    "is_ignored",
    "normalise",
    "parse",
    "parse_env",
    "parse_ini",
    "parse_properties",
    "to_events",
]

MAX_FILE_BYTES = 1024 * 1024  # larger files: digest only, no key-level diff
MAX_DOC_BYTES = 64 * 1024  # redacted document kept in the cursor / in raw up to this JSON size
MAX_STATE_BYTES = 3 * 1024 * 1024  # the whole cursor (per-file entries and documents)
ENTRY_BYTES = 120  # JSON size of a file's entry without its document, plus its path
MAX_NODES = 100_000
MAX_DEPTH = 64
RACY_NS = 2_000_000_000

_SUFFIXES = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".properties": "properties",
    ".env": "env",
}
_SKIP_DIRS = frozenset({".git", ".hg", ".svn"})
_TEMP_SUFFIXES = (".swp", ".swo", ".swx", ".tmp", "~")


def is_ignored(name: str) -> bool:
    """Editor temp and backup files (vim, emacs, kate...)."""
    return (
        name.endswith(_TEMP_SUFFIXES)
        or name.startswith(".#")
        or (name.startswith("#") and name.endswith("#"))
        or name == "4913"
    )


def format_of(name: str) -> str | None:
    """The format of a file by its name, or None for files the watcher ignores."""
    if is_ignored(name):
        return None
    lower = name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if lower.endswith(suffix) and len(lower) > len(suffix) or lower == suffix:
            return fmt
    if lower.startswith(".env."):
        return "env"
    return None


# --------------------------------------------------------------------------------------------
# parsers (pure)


def _bad(rel: str, fmt: str, detail: str) -> DecodeError:
    return DecodeError("bad_config", f"{rel}: not valid {fmt.upper()}: {redact_text(detail)}")


_ENV_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*(=)?")
_ENV_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$", "'": "'", "`": "`"}


def _closing_quote(text: str, quote: str) -> int:
    if quote == "'":
        return text.find("'")
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


def _env_unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ENV_ESCAPES.get(m.group(1), m.group(0)), text, flags=re.S)


def parse_env(text: str) -> dict[str, Any]:
    """A dotenv file as ``{KEY: value}`` (last assignment wins); ValueError names a bad line."""
    out: dict[str, Any] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        s = lines[i].strip()
        i += 1
        if not s or s.startswith("#"):
            continue
        if re.match(r"export[ \t]+", s):
            s = s[6:].lstrip()
        m = _ENV_KEY.match(s)
        if not m:
            raise ValueError(f"line {number}: expected KEY=VALUE")
        key, rest = m.group(1), s[m.end() :]
        if m.group(2) is None:
            if rest.strip() and not rest.lstrip().startswith("#"):
                raise ValueError(f"line {number}: expected KEY=VALUE")
            out[key] = None
            continue
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote, buf = rest[0], rest[1:]
            while (end := _closing_quote(buf, quote)) < 0:
                if i >= len(lines):
                    raise ValueError(f"line {number}: unterminated {quote} quote")
                buf += "\n" + lines[i]
                i += 1
            value, tail = buf[:end], buf[end + 1 :].strip()
            if tail and not tail.startswith("#"):
                raise ValueError(f"line {number}: unexpected text after the closing quote")
            out[key] = _env_unescape(value) if quote == '"' else value
        else:
            out[key] = "" if rest.startswith("#") else re.split(r"[ \t]+#", rest, maxsplit=1)[0].strip()
    return out


_PROP_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _prop_unescape(text: str, number: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(text):
            break  # a lone backslash at the very end is dropped, as Java does
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"line {number}: malformed \\uXXXX escape")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_PROP_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _trailing_backslashes(line: str) -> int:
    return len(line) - len(line.rstrip("\\"))


def parse_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file as ``{key: value}`` (``Properties.load`` rules)."""
    out: dict[str, str] = {}
    lines = re.split(r"\r\n|\r|\n", text)
    i = 0
    while i < len(lines):
        number = i + 1
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while _trailing_backslashes(line) % 2 == 1:
            line = line[:-1]
            if i >= len(lines):
                break
            line += lines[i].lstrip(" \t\f")
            i += 1
        j = 0
        while j < len(line) and line[j] not in "=: \t\f":
            j += 2 if line[j] == "\\" else 1
        key, rest = line[:j], line[j:]
        rest = rest.lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        out[_prop_unescape(key, number)] = _prop_unescape(rest, number)
    return out


_ROOT = "\x00root"


def parse_ini(text: str) -> dict[str, Any]:
    """An INI file as ``{section: {key: value}}``; keys before any section at the top level."""

    def load(body: str) -> configparser.ConfigParser:
        cp = configparser.ConfigParser(
            interpolation=None, strict=False, allow_no_value=True, default_section="\x00no-default"
        )
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read_string(body)
        return cp

    try:
        try:
            cp = load(text)
            top: dict[str, Any] = {}
        except configparser.MissingSectionHeaderError:
            cp = load(f"[{_ROOT}]\n{text}")
            top = dict(cp.items(_ROOT, raw=True))
    except configparser.ParsingError as exc:
        lines = sorted({n for n, _ in exc.errors})
        raise ValueError(f"lines {lines}: not `key = value` nor `[section]`") from None
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        raise ValueError(f"{type(exc).__name__}" + (f" at line {line}" if line else "")) from None
    out = dict(top)
    for section in cp.sections():
        if section != _ROOT:
            out[section] = dict(cp.items(section, raw=True))
    return out


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse(data: bytes, fmt: str, rel: str = "<file>") -> Any:
    """The JSON-safe document of a config file's bytes; DecodeError ``bad_config`` if unparseable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if fmt != "properties":
            raise _bad(rel, fmt, f"not UTF-8 (byte {exc.start})") from None
        text = data.decode("latin-1")  # the historical encoding of .properties
    try:
        if fmt == "yaml":
            docs = list(yaml.load_all(text, Loader=_YAML_LOADER))  # noqa: S506 -- a safe loader
            doc: Any = None if not docs else docs[0] if len(docs) == 1 else docs
        elif fmt == "json":
            doc = orjson.loads(text)
        elif fmt == "toml":
            doc = tomllib.loads(text)
        elif fmt == "ini":
            doc = parse_ini(text)
        elif fmt == "env":
            doc = parse_env(text)
        elif fmt == "properties":
            doc = parse_properties(text)
        else:
            raise _bad(rel, fmt, "unknown format")
    except yaml.YAMLError as exc:
        raise _bad(rel, fmt, _yaml_error(exc)) from None
    except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise _bad(rel, fmt, str(exc)) from None
    except RecursionError:
        raise _bad(rel, fmt, "nested too deeply") from None
    return normalise(doc, rel=rel)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if k is None or isinstance(k, bool):
        return orjson.dumps(k).decode()
    if isinstance(k, datetime | date | dtime):
        return k.isoformat()
    return str(k)


def normalise(value: Any, *, rel: str = "<file>") -> Any:
    """A JSON-safe copy of a parsed document (see module doc); DecodeError past the size limits."""
    count = 0

    def walk(v: Any, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            raise DecodeError(
                "oversized", f"{rel}: more than {MAX_NODES:,} values or nested deeper than {MAX_DEPTH}"
            )
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int):
            return v if -(2**63) <= v < 2**63 else str(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else repr(v)
        if isinstance(v, dict):
            return {_key(k): walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x, depth + 1) for x in v]
        if isinstance(v, set | frozenset):
            return [walk(x, depth + 1) for x in sorted(v, key=repr)]
        if isinstance(v, datetime | date | dtime):
            return v.isoformat()
        if isinstance(v, bytes):
            return "base64:" + base64.b64encode(v).decode()
        return str(v)

    return walk(value, 0)


# --------------------------------------------------------------------------------------------
# events (pure)


@dataclass(frozen=True)
class ConfigChange:
    """One file's change as the fetcher saw it: everything :func:`to_events` needs.

    ``before``/``after`` are the documents (None when absent); ``before_known``/``after_known``
    say whether they are known at all (False: tracked by digest only). ``attribution`` is
    ``{"via": "git", "commit", "name", "email", "date"}`` or ``{"via": "os", "user", "reason"}``.
    ``error`` is set when the new bytes did not parse: to_events raises it (-> DLQ).
    """

    root: str
    path: str
    fmt: str
    action: str  # create | update | delete
    seq: int
    host: str
    time: datetime
    digest: str | None
    previous_digest: str | None
    size: int | None = None
    before: Any = None
    after: Any = None
    before_known: bool = True
    after_known: bool = True
    attribution: dict[str, Any] = field(default_factory=dict)
    error: DecodeError | None = None


def _empty_like(other: Any) -> Any:
    return [] if isinstance(other, list) else {} if isinstance(other, dict) else None


def _diff(ch: ConfigChange) -> dict[str, Any]:
    if not ch.after_known or (not ch.before_known and ch.action == "delete"):
        return {
            "changed": ["$"],
            "before": {"$": ch.previous_digest},
            "after": {"$": ch.digest},
            "digest_only": True,
        }
    if not ch.before_known:
        return structured_diff(None, ch.after, before_known=False)
    before = ch.before if ch.action != "create" else _empty_like(ch.after)
    after = ch.after if ch.action != "delete" else _empty_like(ch.before)
    return structured_diff(before, after)


def _actor(ch: ConfigChange) -> tuple[dict[str, Any], list[str]]:
    a = ch.attribution
    if a.get("via") == "git" and a.get("email"):
        email = str(a["email"])
        name = str(a.get("name") or email)
        bot = "[bot]" in email or "[bot]" in name
        actor = {
            "id": f"git:{email.lower()}",
            "display": name,
            "kind": "service" if bot else "human",
            "principal": f"git:{email}",
            "verified": False,
            "assurance": "claimed",
        }
        return actor, [f"commit:{a['commit']}"] if a.get("commit") else []
    user = str(a.get("user") or "unknown")
    principal = f"os:{user}@{ch.host}"
    return {
        "id": principal,
        "display": user,
        "kind": "unknown",
        "principal": principal,
        "verified": False,
        "assurance": "claimed",
    }, []


def source_uri(host: str, root: str) -> str:
    return f"config://{host}{root if root.startswith('/') else '/' + root}"


def to_events(ch: ConfigChange, *, scope: str) -> list[Event]:
    """The ``config.changed`` event of one file change (see module doc); DecodeError if unparseable."""
    if ch.error is not None:
        raise ch.error
    source = source_uri(ch.host, ch.root)
    actor, links = _actor(ch)
    raw: dict[str, Any] = {
        "path": ch.path, "dir": ch.root, "format": ch.fmt, "action": ch.action,
        "digest": ch.digest, "previous_digest": ch.previous_digest, "size": ch.size,
        "attribution": redact(ch.attribution),
    }  # fmt: skip
    if ch.action != "delete":
        if not ch.after_known:
            raw["document_omitted"] = f"file larger than {MAX_FILE_BYTES} bytes"
        else:
            doc = redact(ch.after)
            if len(orjson.dumps(doc)) <= MAX_DOC_BYTES:
                raw["document"] = doc
            else:
                raw["document_omitted"] = f"redacted document larger than {MAX_DOC_BYTES} bytes"
    dir_name = Path(ch.root).name or ch.root
    envelope = {
        "id": event_id("config", source, ch.path, ch.seq, ch.digest or "deleted"),
        "source": source,
        "type": "config.changed",
        "time": ch.time,
        "scope": scope,
        "actor": actor,
        "target": {"kind": "config.file", "id": f"{dir_name}/{ch.path}", "name": ch.path},
        "action": ch.action,
        "outcome": "success",
        "links": links,
        "subject": ch.path,
        "diff": _diff(ch),
        "raw": raw,
        "source_seq": ch.seq,
    }
    return [build(envelope)]


# --------------------------------------------------------------------------------------------
# attribution (I/O)


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 -- no USER variable and no passwd entry (containers)
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None


class GitAttribution:
    """Who changed a file: the git author of its last commit when clean, else the OS user."""

    def __init__(self, root: Path, user: str | None = None) -> None:
        self.root = root
        self.user = user or os_user()
        self._probed = False
        self.toplevel: Path | None = None
        self._dirty: dict[str, str] = {}  # repo-relative path -> porcelain status code
        self._tracked: set[str] = set()

    def _probe(self) -> None:
        if self._probed:
            return
        self._probed = True
        top = _git(self.root, "rev-parse", "--show-toplevel")
        if not top or not top.strip():
            return
        self.toplevel = Path(top.strip()).resolve()
        status = (
            _git(
                self.toplevel,
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--no-renames",
                "--",
                str(self.root),
            )
            or ""
        )
        self._dirty = {entry[3:]: entry[:2] for entry in status.split("\0") if len(entry) > 3}
        tracked = _git(self.toplevel, "ls-files", "-z", "--", str(self.root)) or ""
        self._tracked = {p for p in tracked.split("\0") if p}

    def _os(self, reason: str) -> dict[str, Any]:
        return {"via": "os", "user": self.user, "reason": reason}

    def __call__(self, rel: str, action: str) -> dict[str, Any]:
        self._probe()
        if self.toplevel is None:
            return self._os("not in a git repository")
        path = (self.root / rel).resolve() if action != "delete" else self.root / rel
        try:
            in_repo = path.relative_to(self.toplevel).as_posix()
        except ValueError:
            return self._os("outside the git work tree")
        code = self._dirty.get(in_repo)
        if code == "??":
            return self._os("not tracked by git")
        if code is not None:
            return self._os("working copy differs from the last commit")
        if in_repo not in self._tracked and action != "delete":
            return self._os("not tracked by git")
        log = _git(self.toplevel, "log", "-1", "--format=%H%x00%an%x00%ae%x00%aI", "--", in_repo)
        parts = (log or "").strip().split("\0")
        if len(parts) != 4:
            return self._os("no commit touches this file")
        sha, name, email, when = parts
        return {"via": "git", "commit": sha, "name": name, "email": email, "date": when}


# --------------------------------------------------------------------------------------------
# fetching (I/O)


def new_cursor() -> dict[str, Any]:
    return {"v": 1, "seq": 0, "files": {}}


def scan(root: Path) -> list[tuple[str, str]]:
    """``(relative path, format)`` of every config file under ``root``, sorted."""
    found: list[tuple[str, str]] = []
    for here, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        base = Path(here)
        for name in names:
            fmt = format_of(name)
            if fmt is not None:
                found.append(((base / name).relative_to(root).as_posix(), fmt))
    found.sort()
    return found


def _digest(data: bytes) -> str:
    """The keyed hash of a file's bytes: a short config file (``DB_PASSWORD=...``) could be
    confirmed from a plain digest by hashing guesses, its redacted document being stored."""
    return keyed.current().tag(data)


StatCache = dict[str, tuple[int, int, int, str, bool]]  # rel -> (ino, size, mtime_ns, digest, trusted)


def _summary(rel: str, fmt: str, sha: str | None, extra: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"path": rel, "format": fmt, "digest": sha, **(extra or {})})


def fetch_changes(
    root: Path,
    cursor: Any,
    *,
    cache: StatCache | None = None,
    host: str | None = None,
    attribute: Callable[[str, str], dict[str, Any]] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[RawRecord]:
    """Scan ``root`` once; yield a record (payload: :class:`ConfigChange`) per changed file.

    ``cursor`` (the decoded cursor, None on a first run) is updated in place and is every
    record's ``cursor`` (see module doc). ``cache`` is the process-local stat cache.
    """
    try:
        root = root.resolve(strict=True)
    except OSError:
        raise SourceError(f"{root}: no such directory") from None
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory")
    state = cursor if isinstance(cursor, dict) and cursor.get("v") == 1 else new_cursor()
    files: dict[str, dict[str, Any]] = state["files"]
    cache = {} if cache is None else cache
    host = host or socket.gethostname()
    attribute = attribute or GitAttribution(root)
    used = sum(int(e.get("n", 0)) for e in files.values())
    present = dict(scan(root))
    overhead = sum(len(rel) + ENTRY_BYTES for rel in set(present) | set(files))
    if overhead > MAX_STATE_BYTES:
        raise SourceError(
            f"{root}: {len(present):,} config files are too many for one cursor "
            f"({MAX_STATE_BYTES // 1024 // 1024} MiB); run one source per subdirectory"
        )
    used += overhead

    for rel in sorted(set(present) | set(files)):
        old = files.get(rel)
        fmt = present.get(rel) or (old or {}).get("fmt", "unknown")
        data: bytes | None = None
        st: os.stat_result | None = None
        sha: str | None = None
        if rel in present:
            path = root / rel
            try:
                st = path.stat()
                hit = cache.get(rel)
                if hit and hit[4] and hit[:3] == (st.st_ino, st.st_size, st.st_mtime_ns):
                    sha = hit[3]
                else:
                    data = path.read_bytes()
                    sha = _digest(data)
                    trusted = time.time_ns() - st.st_mtime_ns > RACY_NS
                    cache[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, sha, trusted)
            except (FileNotFoundError, NotADirectoryError):
                st, sha = None, None
            except OSError as exc:
                raise SourceError(f"{root / rel}: cannot read: {exc}") from None
        if st is None:
            cache.pop(rel, None)
            if old is None:
                continue
            # deleted
            state["seq"] += 1
            used -= int(old.get("n", 0))
            del files[rel]
            change = ConfigChange(
                root=str(root), path=rel, fmt=fmt, action="delete", seq=state["seq"], host=host,
                time=clock(), digest=None, previous_digest=old.get("digest"),
                before=old.get("doc"), before_known="doc" in old, attribution=attribute(rel, "delete"),
            )  # fmt: skip
            yield RawRecord(
                payload=change,
                cursor=state,
                origin=str(root / rel),
                original=_summary(rel, fmt, None, {"action": "delete"}),
            )
            continue
        if old is not None and old.get("digest") == sha:
            continue
        if data is None:  # the stat cache said unchanged but the cursor disagrees: read it
            try:
                data = (root / rel).read_bytes()
            except OSError:
                continue
            sha = _digest(data)
        if old is not None and "digest" not in old and old.get("sha256") == hashlib.sha256(data).hexdigest():
            # a cursor of the former version (plain sha256): the same content, re-keyed silently
            old["digest"] = sha
            del old["sha256"]
            continue
        assert st is not None and sha is not None
        # A file whose every content so far was unparseable never had an event: this is its create.
        fresh = old is None or bool(old.get("new"))
        action = "create" if fresh else "update"
        mtime = from_micros(st.st_mtime_ns // 1000)
        error: DecodeError | None = None
        doc: Any = None
        after_known = len(data) <= MAX_FILE_BYTES
        if after_known:
            try:
                doc = redact(parse(data, fmt, rel))
            except DecodeError as exc:
                error = exc
        entry: dict[str, Any] = {"digest": sha, "fmt": fmt}
        if old is not None:
            used -= int(old.get("n", 0))
        if error is not None:
            entry["bad"] = True
            if fresh:
                entry["new"] = True
            if old is not None and "doc" in old:  # keep the last good document to diff from later
                entry["doc"], entry["n"] = old["doc"], old.get("n", 0)
        elif after_known:
            size = len(orjson.dumps(doc))
            if size <= MAX_DOC_BYTES and used + size <= MAX_STATE_BYTES:
                entry["doc"], entry["n"] = doc, size
        used += int(entry.get("n", 0))
        state["seq"] += 1
        files[rel] = entry
        change = ConfigChange(
            root=str(root), path=rel, fmt=fmt, action=action, seq=state["seq"], host=host, time=mtime,
            digest=sha, previous_digest=(old or {}).get("digest"), size=len(data),
            before=None if fresh else (old or {}).get("doc"), before_known=fresh or "doc" in (old or {}),
            after=doc, after_known=after_known, error=error,
            attribution=attribute(rel, action) if error is None else {},
        )  # fmt: skip
        extra: dict[str, Any] = {"action": action, "size": len(data)}
        if error is not None:  # no excerpt of the text: it could hold a secret no rule recognises
            extra["error"] = error.message
        yield RawRecord(
            payload=change, cursor=state, origin=str(root / rel), original=_summary(rel, fmt, sha, extra)
        )
