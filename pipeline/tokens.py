"""API bearer tokens: created, listed and revoked by the CLI, checked by the worker's API.

A token is ``clt_`` + 43 URL-safe base64 characters (256 random bits). Only its SHA-256 is kept
(a hash of a high-entropy secret needs no salt or slow hash: nothing can be guessed from it),
with its name, role and creation time, in one JSON file (``CAUSELOG_TOKENS_FILE``, default
``$CAUSELOG_HOME/tokens.json``, mode 0600)::

    {"version": 1, "tokens": [{"name": "admin", "role": "admin",
                               "hash": "sha256:<64 hex>", "created": "2026-12-03T05:00:00.000000Z"}]}

Writers take an exclusive ``flock`` on ``tokens.json.lock`` and replace the file atomically
(temporary file, fsync, rename), so a reader never sees half a file. The worker re-reads the
file whenever its modification time, size or inode changes, so a revocation is effective on
the next request. Several hosts share tokens by sharing this one file (a shared volume, or a
copy distributed by configuration management: every copy holds hashes only).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError

#: Reading roles, weakest first: each may do what the ones before it may.
READ_ROLES = ("reader", "auditor", "admin")
#: Every role. ``ingest`` only sends events to the HTTP receivers (CloudEvents, webhook
#: mappings): it reads nothing, and no reading role may send.
ROLES = (*READ_ROLES, "ingest")
PREFIX = "clt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Token:
    """One token as stored: never the token itself."""

    name: str
    role: str
    hash: str
    created: str


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` may do what ``needed`` may (admin > auditor > reader; ``ingest`` only ingests)."""
    if role == "ingest" or needed == "ingest":
        return role == needed
    return role in READ_ROLES and READ_ROLES.index(role) >= READ_ROLES.index(needed)


def token_hash(token: str) -> str:
    """The stored form of a token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    """``name`` if it is a usable token name, else ConfigError."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"token name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-', "
                          "starting with a letter or digit")
    return name


def check_role(role: str) -> str:
    """``role`` if it is a known role, else ConfigError."""
    if role not in ROLES:
        raise ConfigError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def load(path: Path) -> list[Token]:
    """The tokens stored in ``path`` (none when the file does not exist)."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from None
    try:
        return [Token(str(t["name"]), check_role(str(t["role"])), str(t["hash"]), str(t.get("created", "")))
                for t in data["tokens"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"the token file {path} is malformed ({exc!r} missing or wrong)") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _save(path: Path, tokens: list[Token]) -> None:
    body = orjson.dumps({"version": 1, "tokens": [t.__dict__ for t in tokens]}, option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, body)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create(path: Path, name: str, role: str, *, now: datetime | None = None) -> str:
    """Store a new token called ``name`` with ``role`` and return it (the only time it is seen)."""
    check_name(name)
    check_role(role)
    token = new_token()
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with _locked(path):
        tokens = load(path)
        if any(t.name == name for t in tokens):
            raise ConfigError(f"a token named {name!r} exists already in {path} (revoke it first)")
        _save(path, [*tokens, Token(name, role, token_hash(token), created)])
    return token


def revoke(path: Path, name: str) -> Token:
    """Remove the token called ``name``; ConfigError when there is none."""
    with _locked(path):
        tokens = load(path)
        gone = [t for t in tokens if t.name == name]
        if not gone:
            raise ConfigError(f"no token named {name!r} in {path}")
        _save(path, [t for t in tokens if t.name != name])
    return gone[0]


def ensure_admin(token_file: Path, admin_file: Path) -> str | None:
    """Make sure an admin can get in: when no token has the ``admin`` role, create one.

    The new token (named ``admin``, or ``admin-N`` when that name is taken) is written to
    ``admin_file`` (mode 0600), which the local CLI sends by default. Returns it, or None when an
    admin token exists already. A revoked token is never brought back: a fresh value is made.
    """
    with _locked(token_file):
        existing = load(token_file)
        if any(t.role == "admin" for t in existing):
            return None
        names = {t.name for t in existing}
        name = next(n for n in ("admin", *(f"admin-{i}" for i in range(2, 10_000))) if n not in names)
        token = new_token()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        admin_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(admin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(token + "\n")
        _save(token_file, [*existing, Token(name, "admin", token_hash(token), created)])
    return token


def local_token(token: str | None, admin_file: Path) -> str | None:
    """The token the CLI sends: ``CAUSELOG_TOKEN`` when set, else the local admin token, if any."""
    if token:
        return token
    try:
        return admin_file.read_text().strip() or None
    except (FileNotFoundError, PermissionError):
        return None


class TokenFile:
    """The worker's view of the token file, re-read as soon as the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Any = None
        self._tokens: list[Token] = []
        self._lock = threading.Lock()

    def _current(self) -> list[Token]:
        try:
            st = self.path.stat()
            stamp: Any = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._tokens = load(self.path) if stamp is not None else []
                self._stamp = stamp
            return self._tokens

    def find(self, presented: str) -> Token | None:
        """The stored token matching ``presented``, compared in constant time against every hash."""
        digest = token_hash(presented)
        found = None
        for t in self._current():
            if hmac.compare_digest(digest.encode(), t.hash.encode()):
                found = t
        return found
